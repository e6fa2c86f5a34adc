"""Fast vs naive greedy search: wall time of BlockPruner's and FinerCut's first K steps on one model.

Both searches must return the same order (checked); the script prints fast, naive and naive ÷ fast.

    PYTHONPATH=src python benchmarks/bench_greedy.py --model resources/demo/model \
        --text resources/demo/corpus --bp-nsamples 32 --bp-seqlen 256 --steps 12 --threads 1

`--device cuda` times it on a GPU.

`--device-cache-gb X` times the fast search with at most X GiB of its caches on the device (the rest in
CPU memory) against the same search without that bound, instead of the naive search: the orders must
agree, and bounded ÷ unbounded is the time cost of spilling. The script prints the caches' full size so
that X can be chosen below it.

`--random-layers 32` times a random-initialised model of the demo's widths with 32 layers instead (the
depth of Llama-2-7B): the orders mean nothing there, but they must still agree, and the ratio shows how
the prefix cache scales with depth. Measured figures: docs/measurements/greedy-search.md.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import AutoModelForCausalLM

from prunebench.methods import get_method
from prunebench.methods.blockpruner import CalibrationPerplexity, candidate_list
from prunebench.methods.finercut import ExclusionSchedule, OutputDivergence, reference_logits
from prunebench.methods.greedy_method import calibration_batches
from prunebench.methods.greedy_reference import reference_search
from prunebench.methods.greedy_search import DecoderRunner, cache_strides, greedy_search
from prunebench.models import get_adapter, load_pretrained


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def warm_up(model, batches) -> None:
    """One forward pass before any timing (CUDA context, kernel selection and allocator warm-up)."""
    with torch.no_grad():
        model(input_ids=batches[0].to(model.device), use_cache=False)


def bench_spill(
    name: str, model, batches, criterion, candidates, steps: int, cache_gb: float, device_gb: float
):
    """Bounded vs unbounded device cache: the same order, and the time ratio."""
    warm_up(model, batches)
    runner = DecoderRunner(model, batches)
    state = sum(h.numel() * h.element_size() for h in runner.inputs)
    prefix, memo = cache_strides(runner, cache_gb, 2 * runner.num_layers)
    full = (2 * runner.num_layers + 1) * state + (
        0 if memo == 0 else 2 * 2 * runner.num_layers * (runner.num_layers - 1) * state // memo
    )
    peaks = []

    def run(device_cache_gb: float):
        if model.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(model.device)
        result = greedy_search(model, batches, criterion, candidates, steps, name, cache_gb, device_cache_gb)
        if model.device.type == "cuda":
            peaks.append(f"{torch.cuda.max_memory_allocated(model.device) / 2**30:.2f} GiB")
        return result

    free, free_s = _timed(lambda: run(0.0))
    bounded, bounded_s = _timed(lambda: run(device_gb))
    if free.order != bounded.order or free.scores != bounded.scores:
        raise SystemExit(f"{name}: bounded and unbounded orders differ: {bounded.order} vs {free.order}")
    print(
        f"{name:12s} {steps} steps, caches {full / 2**30:.3f} GiB (strides {prefix}, {memo}), device budget "
        f"{device_gb:.3f} GiB: unbounded {free_s:8.2f} s  bounded {bounded_s:8.2f} s  bounded/unbounded "
        f"{bounded_s / free_s:5.2f}x  same order True  order {' '.join(f'{r.layer}.{r.part}' for r in free.order)}"
        + (f"  device peak unbounded {peaks[0]}, bounded {peaks[1]}" if peaks else "")
    )


def bench(
    name: str, model, batches, criterion, candidates, steps: int, cache_gb: float, device_gb: float = 0.0
) -> None:
    if device_gb:
        return bench_spill(name, model, batches, criterion, candidates, steps, cache_gb, device_gb)
    warm_up(model, batches)
    fast, fast_s = _timed(lambda: greedy_search(model, batches, criterion, candidates, steps, name, cache_gb))
    naive, naive_s = _timed(lambda: reference_search(model, batches, criterion, candidates, steps))
    if fast.order != naive.order:
        raise SystemExit(f"{name}: fast and naive orders differ: {fast.order} vs {naive.order}")
    rows = sum(int(b.shape[0]) for b in batches)
    print(
        f"{name:12s} rows {rows:3d} x {batches[0].shape[1]:4d} tokens, batch {batches[0].shape[0]}, {steps} steps: "
        f"fast {fast_s:8.2f} s  naive {naive_s:8.2f} s  naive/fast {naive_s / fast_s:5.2f}x  "
        f"order {' '.join(f'{r.layer}.{r.part}' for r in fast.order)}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="resources/demo/model")
    parser.add_argument("--text", default="resources/demo/corpus", help="calibration text source")
    parser.add_argument(
        "--steps", type=int, default=12, help="search steps to time (default: the default study's 12)"
    )
    parser.add_argument("--bp-nsamples", type=int, default=64, help="BlockPruner calibration examples")
    parser.add_argument("--bp-seqlen", type=int, default=256, help="BlockPruner row length")
    parser.add_argument("--fc-nsamples", type=int, default=10, help="FinerCut rows (official 10)")
    parser.add_argument("--fc-seqlen", type=int, default=256, help="FinerCut row length (official 256)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--cache-gb", type=float, default=8.0)
    parser.add_argument(
        "--device-cache-gb", type=float, default=0.0, help="time a device budget against none (see above)"
    )
    parser.add_argument(
        "--random-layers",
        type=int,
        default=0,
        help="time a random-initialised model of --model's widths with this many layers instead (speed only)",
    )
    parser.add_argument(
        "--methods", nargs="+", default=["blockpruner", "finercut"], choices=["blockpruner", "finercut"]
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_pretrained(args.model, dtype=getattr(torch, args.dtype), device=args.device)
    if args.random_layers:
        torch.manual_seed(0)
        shape = model.config.to_dict() | {"num_hidden_layers": args.random_layers}
        model = AutoModelForCausalLM.from_config(type(model.config).from_dict(shape))
        model = model.to(device=args.device, dtype=getattr(torch, args.dtype)).eval()
    layers = get_adapter(model).num_layers
    print(f"model {args.model}: {layers} layers, device {args.device}, {torch.get_num_threads()} threads")

    if "blockpruner" in args.methods:
        method = get_method("blockpruner")
        config = method.config({"nsamples": args.bp_nsamples, "seqlen": args.bp_seqlen})
        batches = calibration_batches(
            method.calibration(tokenizer, args.text, config), config.batch_size, "bench"
        )
        criterion = CalibrationPerplexity(batches, model.config.pad_token_id)
        candidates = candidate_list(layers, "mix")
        bench(
            "blockpruner",
            model,
            batches,
            criterion,
            candidates,
            args.steps,
            args.cache_gb,
            args.device_cache_gb,
        )
    if "finercut" in args.methods:
        method = get_method("finercut")
        config = method.config({"nsamples": args.fc_nsamples, "seqlen": args.fc_seqlen})
        batches = calibration_batches(
            method.calibration(tokenizer, args.text, config), config.batch_size, "bench"
        )
        criterion = OutputDivergence(reference_logits(model, batches), config.divergence)
        schedule = ExclusionSchedule.build(layers, config.prune_level, config.exclude)
        candidates = schedule.candidates
        bench(
            "finercut", model, batches, criterion, candidates, args.steps, args.cache_gb, args.device_cache_gb
        )


if __name__ == "__main__":
    main()
