"""Measured latency and memory of the evaluated model: prefill and decode, side by side with a base model.

Protocol (design §4, issue 7):

- A prompt of ``prompt_length`` random token ids (fixed seed; content does not matter for speed) per
  sequence, ``batch_size`` sequences, no padding.
- **Prefill**: one forward pass over the prompt that fills the KV cache and yields the first greedy token
  (only the last position goes through the LM head, as ``generate`` does).
- **Decode**: ``new_tokens`` further forward passes of one token each through the KV cache, feeding back the
  greedy (argmax) token. The loop is written out instead of calling ``generate`` so that the two phases are
  timed separately and EOS can never end a run early.
- Warm-up runs first (the first one also measures peak memory), then timed repeats until both a minimum
  count and a minimum total duration are reached. With a base model the repeats alternate
  (model, base, model, base, ...) so that a speed-up is a ratio of times taken side by side.
- Timing: CUDA events around each phase and one synchronisation per run on GPU; ``time.perf_counter``
  on CPU. Reported: median, p10, p90 and the raw timings.
- Peak memory is taken over the first warm-up run of each model, with the level just before it. It is the
  process's: RSS on CPU and the CUDA allocator's peak on GPU both include every model loaded (the base model
  too), so the difference to the level before the run is the run's own working memory (activations, cache).
- Running out of memory at one batch size / prompt length is recorded as ``"does not fit"`` and the sweep
  goes on.

Parameters and forward FLOPs per token (``prunebench.models.counting``) are reported beside the times, and
the ideal speed-ups versus the base model (ratios of FLOPs and of weight bytes) beside the measured ones.
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


def validate_config(config: LatencyConfig) -> None:
    """Reject sizes and counts that make no sense, before anything is run."""
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


@torch.inference_mode()
def run_once(model: torch.nn.Module, input_ids: torch.Tensor, new_tokens: int, clock: _Clock) -> tuple:
    """One prefill and ``new_tokens`` greedy decode steps; returns (prefill seconds, decode seconds)."""
    t0 = clock.mark()
    out = model(input_ids=input_ids, use_cache=True, logits_to_keep=1)
    token = out.logits[:, -1:].argmax(dim=-1)
    t1 = clock.mark()
    cache = out.cache
    for _ in range(new_tokens):
        out = model(input_ids=token, cache=cache, use_cache=True)
        token = out.logits[:, -1:].argmax(dim=-1)
        cache = out.cache
    t2 = clock.mark()
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


def _row(label: str, batch: int, prompt: int, config: LatencyConfig, timings: list, memory: dict) -> dict:
    prefill_raw = [t[0] for t in timings]
    decode_raw = [t[1] / config.new_tokens for t in timings]
    prefill, decode = _summary(prefill_raw), _summary(decode_raw)
    return {
        "model": label,
        "batch_size": batch,
        "prompt_length": prompt,
        "new_tokens": config.new_tokens,
        "status": "ok",
        "repeats": len(timings),
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


def _failed_row(label: str, batch: int, prompt: int, config: LatencyConfig, error: BaseException) -> dict:
    return {
        "model": label,
        "batch_size": batch,
        "prompt_length": prompt,
        "new_tokens": config.new_tokens,
        "status": DOES_NOT_FIT,
        "error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
    }


def _measure_memory(model, input_ids, config: LatencyConfig, clock: _Clock, device: torch.device) -> dict:
    """Peak memory over one whole run (the first warm-up run), with the level before it."""
    before = {"rss_before_bytes": current_rss_bytes()}
    if cuda_in_use(device):
        before["cuda_allocated_before_bytes"] = torch.cuda.memory_allocated(device)
    was_reset = reset_peaks(device)
    run_once(model, input_ids, config.new_tokens, clock)
    return before | read_peaks(device, was_reset)


def measure_cell(models: dict, batch: int, prompt: int, config: LatencyConfig, device: torch.device) -> list:
    """Measure every model at one (batch size, prompt length), interleaving the repeats.

    Returns one row per model; a model that runs out of memory gets a ``"does not fit"`` row and the others
    carry on.
    """
    clock = _Clock(device)
    vocab = min(m.config.vocab_size for m in models.values())
    generator = torch.Generator().manual_seed(config.seed + 7919 * batch + prompt)
    input_ids = torch.randint(0, vocab, (batch, prompt), generator=generator).to(device)
    failed: dict[str, dict] = {}
    memory: dict[str, dict] = {}
    timings: dict[str, list] = {label: [] for label in models}

    def attempt(label: str, action, *args) -> bool:
        """Run ``action(*args)``; an out-of-memory error marks ``label`` as not fitting."""
        try:
            action(*args)
        except RuntimeError as error:
            if not is_out_of_memory(error):
                raise
            failed[label] = _failed_row(label, batch, prompt, config, error)
        else:
            return True
        _free_memory(device)  # outside the handler: the traceback no longer pins the failed run's tensors
        return False

    def warm(label: str) -> None:
        memory[label] = _measure_memory(models[label], input_ids, config, clock, device)
        for _ in range(config.warmup - 1):
            run_once(models[label], input_ids, config.new_tokens, clock)

    def timed(label: str) -> None:
        timings[label].append(run_once(models[label], input_ids, config.new_tokens, clock))

    active = [label for label in models if attempt(label, warm, label)]
    start = time.perf_counter()
    repeats = 0
    while active and repeats < config.max_repeats:
        if repeats >= config.min_repeats and time.perf_counter() - start >= config.min_seconds:
            break
        active = [label for label in active if attempt(label, timed, label)]
        repeats += 1
    return [
        failed.get(label) or _row(label, batch, prompt, config, timings[label], memory[label])
        for label in models
    ]


def _speedup_rows(rows: list, described: dict, config: LatencyConfig) -> list:
    """Measured (ratio of medians, and median of the paired per-repeat ratios) and ideal speed-ups."""
    by_key = {(r["model"], r["batch_size"], r["prompt_length"]): r for r in rows}
    out = []
    for batch in config.batch_sizes:
        for prompt in config.prompt_lengths:
            model, base = by_key[("model", batch, prompt)], by_key[("base", batch, prompt)]
            flops_m = described["model"]["flops_per_token"][str(prompt)]
            flops_b = described["base"]["flops_per_token"][str(prompt)]
            row = {
                "batch_size": batch,
                "prompt_length": prompt,
                "ideal_prefill_flops": flops_b["prefill"] / flops_m["prefill"],
                "ideal_decode_flops": flops_b["decode"] / flops_m["decode"],
                "ideal_weight_bytes": described["base"]["weight_bytes"] / described["model"]["weight_bytes"],
                "ideal_params": described["base"]["total_params"] / described["model"]["total_params"],
            }
            if model["status"] == "ok" and base["status"] == "ok":
                # both ran in every round, so the repeats pair up one to one
                paired_prefill = [
                    b / m for b, m in zip(base["prefill_raw_s"], model["prefill_raw_s"], strict=True)
                ]
                paired_decode = [
                    b / m
                    for b, m in zip(
                        base["decode_raw_s_per_token"], model["decode_raw_s_per_token"], strict=True
                    )
                ]
                row |= {
                    "status": "ok",
                    "measured_prefill": base["prefill_median_s"] / model["prefill_median_s"],
                    "measured_decode": base["decode_median_s_per_token"] / model["decode_median_s_per_token"],
                    "measured_prefill_paired_median": float(np.median(paired_prefill)),
                    "measured_decode_paired_median": float(np.median(paired_decode)),
                }
            else:
                row["status"] = DOES_NOT_FIT
            out.append(row)
    return out


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def measure_latency(
    model: torch.nn.Module, config: LatencyConfig, base: torch.nn.Module | None = None
) -> dict:
    """Sweep batch sizes x prompt lengths for ``model`` (and ``base`` interleaved); a JSON-able dict.

    Keys: ``protocol`` (the config plus what is fixed), ``environment``, ``models`` (sizes and FLOPs of
    ``model`` and ``base``), ``measurements`` (one tidy row per model and cell, raw timings included)
    and, with a base model, ``speedups`` (measured and ideal, per cell).
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

    rows = []
    for batch in config.batch_sizes:
        for prompt in config.prompt_lengths:
            rows.extend(measure_cell(models, batch, prompt, config, device))

    result = {
        "protocol": asdict(config)
        | {
            "decode_steps": config.new_tokens,
            "greedy": True,
            "eos_ignored": True,
            "interleaved": base is not None,
        },
        "environment": environment(device),
        "models": described,
        "measurements": rows,
    }
    if base is not None:
        result["speedups"] = _speedup_rows(rows, described, config)
    return result
