"""``prunebench eval latency``: prefill and decode speed and memory, optionally beside the base model."""

from __future__ import annotations

import argparse

from prunebench.commands.common import add_model_arguments, device_of, dtype_of
from prunebench.errors import PrunebenchError
from prunebench.io import OutputKind, atomic_write_json, check_output

NAME = "latency"
GROUP = "eval"
HELP = "prefill/decode latency, tokens/s and peak memory over batch sizes x prompt lengths"
RESULT = OutputKind("latency result", ("protocol", "environment", "measurements"), directory=False)


def _sizes(text: str) -> tuple[int, ...]:
    """``"1,8"`` -> (1, 8); signs are checked later with the other inputs."""
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument(
        "--batch-sizes", type=_sizes, default="1", help="comma-separated batch sizes, e.g. 1,8"
    )
    parser.add_argument(
        "--prompt-lengths",
        type=_sizes,
        default="128",
        help="comma-separated prompt lengths in tokens, e.g. 128,512",
    )
    parser.add_argument("--new-tokens", type=int, default=64, help="greedy decode steps, EOS ignored")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per cell before measuring")
    parser.add_argument("--min-repeats", type=int, default=5, help="timed runs per cell, at least")
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=2.0,
        help="keep repeating a cell until this much time is measured",
    )
    parser.add_argument("--max-repeats", type=int, default=200, help="timed runs per cell, at most")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random prompt tokens")
    parser.add_argument("--threads", type=int, help="torch CPU threads (recorded; default: torch's choice)")
    parser.add_argument("--base-model", help="measure this model interleaved for side-by-side speed-ups")
    parser.add_argument(
        "--out", required=True, help="result JSON (new, or an earlier result of this command: replaced)"
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from prunebench.evaluation.latency import (
        DOES_NOT_FIT,
        LatencyConfig,
        check_fits_context,
        measure_latency,
        validate_config,
    )
    from prunebench.models import load_pretrained

    device = device_of(args)
    config = LatencyConfig(
        batch_sizes=args.batch_sizes,
        prompt_lengths=args.prompt_lengths,
        new_tokens=args.new_tokens,
        warmup=args.warmup,
        min_repeats=args.min_repeats,
        min_seconds=args.min_seconds,
        max_repeats=args.max_repeats,
        seed=args.seed,
    )
    validate_config(config)
    check_output(args.out, RESULT)
    if args.threads is not None:
        if args.threads <= 0:
            raise PrunebenchError(f"--threads must be a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)
    check_fits_context(args.model, config)
    if args.base_model:
        check_fits_context(args.base_model, config, label="base model")
    model, _ = load_pretrained(args.model, dtype=dtype_of(args), device=device)
    base = None
    if args.base_model:
        base, _ = load_pretrained(args.base_model, dtype=dtype_of(args), device=device)
    result = measure_latency(model, config, base=base)
    result.update({"model": args.model, "base_model": args.base_model})
    atomic_write_json(args.out, result)
    for row in result["measurements"]:
        cell = f"{row['model']} batch {row['batch_size']} prompt {row['prompt_length']}"
        if row["status"] == DOES_NOT_FIT:
            print(f"{cell}: {DOES_NOT_FIT}")
            continue
        print(
            f"{cell}: prefill {row['prefill_tokens_per_s']:.1f} tok/s, decode {row['decode_tokens_per_s']:.1f} tok/s"
        )
    for s in result.get("speedups", []):
        if s["status"] == "ok":
            print(
                f"speed-up batch {s['batch_size']} prompt {s['prompt_length']}: prefill {s['measured_prefill']:.2f}x "
                f"(ideal {s['ideal_prefill_flops']:.2f}x), decode {s['measured_decode']:.2f}x "
                f"(ideal {s['ideal_decode_flops']:.2f}x FLOPs, {s['ideal_weight_bytes']:.2f}x bytes)"
            )
    return 0
