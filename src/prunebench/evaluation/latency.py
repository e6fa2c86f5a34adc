"""Measured latency and memory of the evaluated model: prefill and decode, side by side with a base model.

Protocol (design §4, issue 7):

- A prompt of ``prompt_length`` random token ids (fixed seed; content does not matter for speed) per
  sequence, ``batch_size`` sequences, no padding.
- **Prefill**: one forward pass over the prompt that fills the KV cache and yields the first greedy token
  (only the last position goes through the LM head, as ``generate`` does).
- **Decode**: ``new_tokens`` further forward passes of one token each through the KV cache, feeding back the
  greedy (argmax) token. The loop is written out instead of calling ``generate`` so that the two phases are
  timed separately and EOS can never end a run early.
- **Engines** (:mod:`~prunebench.evaluation.engines`): ``eager`` (dynamic KV cache, HF forward passes) and
  ``compiled`` (static KV cache, ``torch.compile``'d decode step); every row records its engine.
- Per runner (engine x model) and cell: the compiled engine first compiles in one untimed run
  (``compile_s``); then one run that measures peak memory and ``warmup - 1`` more untimed runs
  (``warmup_s``); then timed rounds until both a minimum count and a minimum total duration are reached.
  Every runner runs once per round (model, base, model, base, ... and both engines in the same rounds),
  so a speed-up is a ratio of times taken side by side. A compiled runner that fails to compile or run is
  recorded as ``"compile failed"`` with the error, and the other runners carry on.
- Timing: CUDA events around each phase and one synchronisation per run on GPU; ``time.perf_counter``
  on CPU. Reported: median, p10, p90 and the raw timings.
- Peak memory is taken over the first warm-up run of each model, with the level just before it. It is the
  process's: RSS on CPU and the CUDA allocator's peak on GPU both include every model loaded (the base model
  too), so the difference to the level before the run is the run's own working memory (activations, cache).
- Running out of memory at one batch size / prompt length is recorded as ``"does not fit"`` and the sweep
  goes on.

Parameters and forward FLOPs per token (``prunebench.models.counting``) are reported beside the times.
Per cell (:mod:`~prunebench.evaluation.roofline`): the FLOPs and bytes of prefill and of one decode step,
their roofline time with the copy bandwidth and GEMM rate measured at the start of the same job, the
bound (compute or memory) and the achieved fractions of those peaks; with a base model, the ideal
speed-up of each phase in each cell (ratio of roofline times: FLOPs for a compute-bound prefill, bytes
for a bandwidth-bound batch-1 decode) beside the measured one.
"""

from __future__ import annotations

import gc
import platform
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import transformers

import prunebench
from prunebench.errors import PrunebenchError
from prunebench.evaluation.cost import cuda_in_use, current_rss_bytes, read_peaks, reset_peaks
from prunebench.evaluation.engines import (
    COMPILE_FAILED,
    CompiledRunner,
    EagerRunner,
    check_engines,
    compiled_graphs,
    make_runner,
)
from prunebench.evaluation.roofline import decode_work, measure_peaks, prefill_work, roofline_seconds
from prunebench.models import get_adapter
from prunebench.models.context import check_context
from prunebench.models.counting import decoder_params, flops_per_token, total_params

DOES_NOT_FIT = "does not fit"


@dataclass(frozen=True)
class LatencyConfig:
    """What to measure and for how long."""

    batch_sizes: tuple[int, ...] = (1,)
    prompt_lengths: tuple[int, ...] = (128,)
    new_tokens: int = 64
    warmup: int = 2
    min_repeats: int = 5
    min_seconds: float = 2.0
    max_repeats: int = 200
    seed: int = 0
    engines: tuple[str, ...] = ("eager",)


def validate_config(config: LatencyConfig) -> None:
    """Reject sizes, counts and engines that make no sense, before anything is run."""
    check_engines(config.engines)
    for name, values in (("batch size", config.batch_sizes), ("prompt length", config.prompt_lengths)):
        if not values:
            raise PrunebenchError(f"no {name} given")
        bad = [v for v in values if not isinstance(v, int) or v <= 0]
        if bad:
            raise PrunebenchError(f"{name} must be a positive integer, got {bad[0]!r}")
        if len(set(values)) != len(values):
            raise PrunebenchError(f"each {name} may be given once, got {list(values)}")
    if config.new_tokens <= 0:
        raise PrunebenchError(f"new tokens must be a positive integer, got {config.new_tokens}")
    if config.warmup < 1:
        raise PrunebenchError(
            f"warm-up runs must be at least 1 (the first measures memory), got {config.warmup}"
        )
    if config.min_repeats < 1 or config.max_repeats < config.min_repeats:
        raise PrunebenchError(
            f"need 1 <= min_repeats <= max_repeats, got min_repeats={config.min_repeats}, "
            f"max_repeats={config.max_repeats}"
        )
    if config.min_seconds < 0:
        raise PrunebenchError(f"minimum duration must be >= 0 seconds, got {config.min_seconds}")


def check_fits_context(source: torch.nn.Module | str, config: LatencyConfig, label: str = "model") -> None:
    """The longest prompt plus the new tokens must fit in the context of ``source`` (a model or a path)."""
    longest = max(config.prompt_lengths)
    what = f"prompt length {longest} + {config.new_tokens} new tokens ="
    check_context(source, longest + config.new_tokens, what if label == "model" else f"{label}: {what}")


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of all parameters (a tied embedding counted once)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The floating dtype of the model's weights (that of the KV cache too)."""
    return next(p.dtype for p in model.parameters() if p.is_floating_point())


def kv_bytes_per_token(model: torch.nn.Module) -> int:
    """KV-cache bytes one token of one sequence adds: keys and values of every remaining KV head.

    ``sum over layers with attention of 2 * kv_heads(layer) * head_dim * bytes per element``; layers whose
    attention was removed cache nothing.
    """
    adapter = get_adapter(model)
    heads = sum(adapter.kv_heads(i) for i in range(adapter.num_layers))
    element = torch.empty((), dtype=model_dtype(model)).element_size()
    return 2 * heads * adapter.head_dim * element


def describe_model(model: torch.nn.Module, config: LatencyConfig) -> dict:
    """Sizes beside the times: parameters, weight and KV bytes, forward FLOPs per token.

    FLOPs per token are given for prefill at the prompt length and for decode at the mean context of the
    decode phase (prompt length + new_tokens / 2).
    """
    return {
        "total_params": total_params(model),
        "decoder_params": decoder_params(model),
        "weight_bytes": weight_bytes(model),
        "kv_bytes_per_token": kv_bytes_per_token(model),
        "num_layers": get_adapter(model).num_layers,
        "dtype": str(model_dtype(model)).removeprefix("torch."),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "flops_per_token": {
            str(p): {
                "prefill": flops_per_token(model, p),
                "decode": flops_per_token(model, p + config.new_tokens // 2),
            }
            for p in config.prompt_lengths
        },
    }


def _cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` where there is one, else what ``platform`` knows."""
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    except OSError:
        match = None
    return match.group(1).strip() if match else platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    """Where and with what the numbers were taken."""
    name = torch.cuda.get_device_name(device) if cuda_in_use(device) else _cpu_name()
    return {
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "prunebench": prunebench.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "timer": "cuda_events" if cuda_in_use(device) else "perf_counter",
    }


class _Clock:
    """Time marks: CUDA events on GPU (read after one synchronisation), ``perf_counter`` on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = cuda_in_use(device)

    def mark(self) -> torch.cuda.Event | float:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def seconds(self, start, end) -> float:
        if self.cuda:
            end.synchronize()
            return start.elapsed_time(end) / 1000.0
        return end - start


def run_once(
    runner: EagerRunner | CompiledRunner, input_ids: torch.Tensor, new_tokens: int, clock: _Clock
) -> tuple:
    """One prefill and ``new_tokens`` greedy decode steps; returns (prefill seconds, decode seconds)."""
    t0, t1, t2 = runner.generate(input_ids, new_tokens, clock.mark)
    return clock.seconds(t0, t1), clock.seconds(t1, t2)


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA OOM (``torch.OutOfMemoryError``) or the CPU allocator failing to allocate."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if cuda_in_use(device):
        torch.cuda.empty_cache()


def _summary(raw: Sequence[float]) -> dict:
    p10, median, p90 = np.percentile(np.asarray(raw, dtype=float), [10, 50, 90])
    return {"median": float(median), "p10": float(p10), "p90": float(p90)}


def _cell_keys(label: str, engine: str, batch: int, prompt: int, config: LatencyConfig) -> dict:
    return {
        "model": label,
        "engine": engine,
        "batch_size": batch,
        "prompt_length": prompt,
        "new_tokens": config.new_tokens,
    }


def _row(keys: dict, config: LatencyConfig, timings: list, memory: dict, preparation: dict) -> dict:
    prefill_raw = [t[0] for t in timings]
    decode_raw = [t[1] / config.new_tokens for t in timings]
    prefill, decode = _summary(prefill_raw), _summary(decode_raw)
    batch, prompt = keys["batch_size"], keys["prompt_length"]
    return {
        **keys,
        "status": "ok",
        "repeats": len(timings),
        **preparation,
        "prefill_median_s": prefill["median"],
        "prefill_p10_s": prefill["p10"],
        "prefill_p90_s": prefill["p90"],
        "prefill_tokens_per_s": batch * prompt / prefill["median"],
        "decode_median_s_per_token": decode["median"],
        "decode_p10_s_per_token": decode["p10"],
        "decode_p90_s_per_token": decode["p90"],
        "decode_tokens_per_s": batch / decode["median"],
        **memory,
        "prefill_raw_s": prefill_raw,
        "decode_raw_s_per_token": decode_raw,
    }


def _failed_row(keys: dict, status: str, error: BaseException) -> dict:
    return {**keys, "status": status, "error": f"{type(error).__name__}: {_first_line(error)}"}


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _measure_memory(runner, input_ids, config: LatencyConfig, clock: _Clock, device: torch.device) -> dict:
    """Peak memory over one whole run (the first run after compilation), with the level before it."""
    before = {"rss_before_bytes": current_rss_bytes()}
    if cuda_in_use(device):
        before["cuda_allocated_before_bytes"] = torch.cuda.memory_allocated(device)
    was_reset = reset_peaks(device)
    run_once(runner, input_ids, config.new_tokens, clock)
    return before | read_peaks(device, was_reset)


def measure_cell(
    runners: dict, batch: int, prompt: int, config: LatencyConfig, device: torch.device, cache_len: int
) -> list:
    """Measure every (engine, model) runner at one (batch size, prompt length), interleaving the repeats.

    ``runners`` maps ``(engine, label)`` to a runner of :mod:`~prunebench.evaluation.engines`. Per runner:
    :meth:`prepare` (the compiled engine compiles here; its wall time is ``compile_s``), one run that
    measures memory, ``warmup - 1`` more untimed runs (``warmup_s`` is the time of these two steps), then
    the timed rounds (every runner once per round). Returns one row per runner; a runner that runs out
    of memory gets a ``"does not fit"`` row, a compiled runner that fails to compile or to run a
    ``"compile failed"`` row, and the others carry on.
    """
    clock = _Clock(device)
    vocab = min(r.model.config.vocab_size for r in runners.values())
    generator = torch.Generator().manual_seed(config.seed + 7919 * batch + prompt)
    input_ids = torch.randint(0, vocab, (batch, prompt), generator=generator).to(device)
    failed: dict[tuple, dict] = {}
    memory: dict[tuple, dict] = {}
    preparation: dict[tuple, dict] = {}
    timings: dict[tuple, list] = {key: [] for key in runners}

    def keys(key: tuple) -> dict:
        return _cell_keys(key[1], key[0], batch, prompt, config)

    def attempt(key: tuple, action, warming: bool = False) -> bool:
        """Run ``action(key)``; out-of-memory marks ``key`` as not fitting, a compiled runner's failure
        while warming up as not compiling."""
        try:
            action(key)
        except Exception as error:  # compiler failures have no common base class
            if is_out_of_memory(error):
                failed[key] = _failed_row(keys(key), DOES_NOT_FIT, error)
            elif warming and runners[key].engine == "compiled":
                failed[key] = _failed_row(keys(key), COMPILE_FAILED, error)
            else:
                raise
        else:
            return True
        _free_memory(device)  # outside the handler: the traceback no longer pins the failed run's tensors
        return False

    def warm(key: tuple) -> None:
        runner = runners[key]
        compile_s = runner.prepare(cache_len, input_ids, config.new_tokens)
        start = time.perf_counter()
        memory[key] = _measure_memory(runner, input_ids, config, clock, device)
        for _ in range(config.warmup - 1):
            run_once(runner, input_ids, config.new_tokens, clock)
        preparation[key] = {"compile_s": compile_s, "warmup_s": time.perf_counter() - start}

    def timed(key: tuple) -> None:
        timings[key].append(run_once(runners[key], input_ids, config.new_tokens, clock))

    active = [key for key in runners if attempt(key, warm, warming=True)]
    graphs_before = compiled_graphs()
    start = time.perf_counter()
    repeats = 0
    while active and repeats < config.max_repeats:
        if repeats >= config.min_repeats and time.perf_counter() - start >= config.min_seconds:
            break
        active = [key for key in active if attempt(key, timed)]
        repeats += 1
    # a graph compiled during the timed rounds would put compile time into the timings: say so in the rows
    for key in preparation:
        preparation[key]["graphs_compiled_while_timed"] = compiled_graphs() - graphs_before
    return [
        failed.get(key) or _row(keys(key), config, timings[key], memory[key], preparation[key])
        for key in runners
    ]


def _add_roofline(row: dict, model: torch.nn.Module, kv_bytes: int, peaks: dict) -> None:
    """Work of the row's cell, its roofline times and the achieved fractions of the measured peaks."""
    batch, prompt, new = row["batch_size"], row["prompt_length"], row["new_tokens"]
    prefill = prefill_work(model, batch, prompt, kv_bytes)
    decode = decode_work(model, batch, prompt + new / 2, kv_bytes)
    prefill_s, prefill_bound = roofline_seconds(prefill, peaks)
    decode_s, decode_bound = roofline_seconds(decode, peaks)
    row |= {
        "prefill_flops": prefill.flops,
        "prefill_bytes": prefill.bytes,
        "prefill_roofline_s": prefill_s,
        "prefill_bound": prefill_bound,
        "decode_flops_per_step": decode.flops,
        "decode_bytes_per_step": decode.bytes,
        "decode_roofline_s_per_token": decode_s,
        "decode_bound": decode_bound,
    }
    if row["status"] != "ok":
        return
    row |= {
        "prefill_flops_per_s": prefill.flops / row["prefill_median_s"],
        "prefill_fraction_of_peak_flops": prefill.flops / row["prefill_median_s"] / peaks["flops_per_s"],
        "decode_bytes_per_s": decode.bytes / row["decode_median_s_per_token"],
        "decode_fraction_of_peak_bandwidth": decode.bytes
        / row["decode_median_s_per_token"]
        / peaks["bytes_per_s"],
        "prefill_fraction_of_roofline": prefill_s / row["prefill_median_s"],
        "decode_fraction_of_roofline": decode_s / row["decode_median_s_per_token"],
    }


def _paired(base_raw: list, model_raw: list) -> dict:
    ratios = [b / m for b, m in zip(base_raw, model_raw, strict=True)]
    return _summary(ratios)


def _speedup_rows(rows: list, described: dict, config: LatencyConfig) -> list:
    """Per engine and cell: measured speed-ups (ratio of medians; median, p10 and p90 of the paired
    per-round ratios) beside the ideal ones (roofline times, and the plain ratios of FLOPs and bytes)."""
    by_key = {(r["engine"], r["model"], r["batch_size"], r["prompt_length"]): r for r in rows}
    out = []
    for engine in config.engines:
        for batch in config.batch_sizes:
            for prompt in config.prompt_lengths:
                model, base = (
                    by_key[(engine, "model", batch, prompt)],
                    by_key[(engine, "base", batch, prompt)],
                )
                flops_m = described["model"]["flops_per_token"][str(prompt)]
                flops_b = described["base"]["flops_per_token"][str(prompt)]
                row = {
                    "engine": engine,
                    "batch_size": batch,
                    "prompt_length": prompt,
                    "ideal_prefill": base["prefill_roofline_s"] / model["prefill_roofline_s"],
                    "ideal_decode": base["decode_roofline_s_per_token"]
                    / model["decode_roofline_s_per_token"],
                    "prefill_bound": base["prefill_bound"],
                    "decode_bound": base["decode_bound"],
                    "ideal_prefill_flops": flops_b["prefill"] / flops_m["prefill"],
                    "ideal_decode_flops": flops_b["decode"] / flops_m["decode"],
                    "ideal_decode_bytes": base["decode_bytes_per_step"] / model["decode_bytes_per_step"],
                    "ideal_weight_bytes": described["base"]["weight_bytes"]
                    / described["model"]["weight_bytes"],
                    "ideal_params": described["base"]["total_params"] / described["model"]["total_params"],
                }
                if model["status"] == "ok" and base["status"] == "ok":
                    # both ran in every round, so the repeats pair up one to one
                    prefill = _paired(base["prefill_raw_s"], model["prefill_raw_s"])
                    decode = _paired(base["decode_raw_s_per_token"], model["decode_raw_s_per_token"])
                    row |= {
                        "status": "ok",
                        "measured_prefill": base["prefill_median_s"] / model["prefill_median_s"],
                        "measured_decode": base["decode_median_s_per_token"]
                        / model["decode_median_s_per_token"],
                        "measured_prefill_paired_median": prefill["median"],
                        "measured_prefill_paired_p10": prefill["p10"],
                        "measured_prefill_paired_p90": prefill["p90"],
                        "measured_decode_paired_median": decode["median"],
                        "measured_decode_paired_p10": decode["p10"],
                        "measured_decode_paired_p90": decode["p90"],
                    }
                else:
                    row["status"] = model["status"] if model["status"] != "ok" else base["status"]
                out.append(row)
    return out


def _engine_rows(rows: list, config: LatencyConfig) -> list:
    """Per model and cell: eager median ÷ compiled median (both measured in the same rounds)."""
    by_key = {(r["engine"], r["model"], r["batch_size"], r["prompt_length"]): r for r in rows}
    out = []
    for label in dict.fromkeys(r["model"] for r in rows):
        for batch in config.batch_sizes:
            for prompt in config.prompt_lengths:
                eager, compiled = (
                    by_key[("eager", label, batch, prompt)],
                    by_key[("compiled", label, batch, prompt)],
                )
                row = {"model": label, "batch_size": batch, "prompt_length": prompt}
                if eager["status"] == "ok" and compiled["status"] == "ok":
                    row |= {
                        "status": "ok",
                        "compiled_over_eager_prefill": eager["prefill_median_s"]
                        / compiled["prefill_median_s"],
                        "compiled_over_eager_decode": eager["decode_median_s_per_token"]
                        / compiled["decode_median_s_per_token"],
                    }
                else:
                    row["status"] = compiled["status"] if compiled["status"] != "ok" else eager["status"]
                out.append(row)
    return out


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def measure_latency(
    model: torch.nn.Module, config: LatencyConfig, base: torch.nn.Module | None = None
) -> dict:
    """Sweep engines x batch sizes x prompt lengths for ``model`` (and ``base`` interleaved); a JSON-able dict.

    Keys: ``protocol`` (the config plus what is fixed), ``environment``, ``engines`` (each engine's
    settings), ``peaks`` (the measured copy bandwidth and GEMM rate, :func:`measure_peaks`), ``models``
    (sizes and FLOPs of ``model`` and ``base``), ``measurements`` (one tidy row per engine, model and
    cell: times with p10/p90, compile and warm-up seconds, memory, roofline work and achieved fractions,
    raw timings), with a base model ``speedups`` (measured and ideal, per engine and cell) and, with both
    engines, ``engine_speedups`` (compiled over eager, per model and cell).
    """
    validate_config(config)
    check_fits_context(model, config)
    models = {"model": model}
    if base is not None:
        check_fits_context(base, config, label="base model")
        models["base"] = base
    device = _device_of(model)
    if any(_device_of(m) != device for m in models.values()):
        raise PrunebenchError("the model and the base model must be on the same device")
    for m in models.values():
        m.eval()
    described = {label: describe_model(m, config) for label, m in models.items()}
    peaks = measure_peaks(device, model_dtype(model))
    runners = {
        (engine, label): make_runner(engine, m) for engine in config.engines for label, m in models.items()
    }
    cache_len = max(config.prompt_lengths) + config.new_tokens

    rows = []
    for batch in config.batch_sizes:
        for prompt in config.prompt_lengths:
            rows.extend(measure_cell(runners, batch, prompt, config, device, cache_len))
    for row in rows:
        _add_roofline(row, models[row["model"]], described[row["model"]]["kv_bytes_per_token"], peaks)

    result = {
        "protocol": asdict(config)
        | {
            "decode_steps": config.new_tokens,
            "greedy": True,
            "eos_ignored": True,
            "interleaved": len(runners) > 1,
            "static_cache_len": cache_len,
        },
        "environment": environment(device),
        "engines": {engine: make_runner(engine, model).settings() for engine in config.engines},
        "peaks": peaks,
        "models": described,
        "measurements": rows,
    }
    if base is not None:
        result["speedups"] = _speedup_rows(rows, described, config)
    if len(config.engines) > 1:
        result["engine_speedups"] = _engine_rows(rows, config)
    return result
