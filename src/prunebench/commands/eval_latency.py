"""``prunebench eval latency``: prefill and decode speed and memory, optionally beside the base model."""

from __future__ import annotations

import argparse
import sys

from prunebench.commands.common import add_model_arguments, device_of, dtype_of
from prunebench.errors import PrunebenchError
from prunebench.io import OutputKind, atomic_write_json, check_output

NAME = "latency"
GROUP = "eval"
HELP = "prefill/decode latency, tokens/s and peak memory over batch sizes x prompt lengths"
# A measured speed-up that gains less than this share of the ideal gain is reported as far below it.
FAR_BELOW = 0.5
RESULT = OutputKind("latency result", ("protocol", "environment", "measurements"), directory=False)


def _names(text: str) -> tuple[str, ...]:
    """``"eager,compiled"`` -> ("eager", "compiled"); names are checked later with the other inputs."""
    return tuple(name.strip() for name in text.split(","))


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
    parser.add_argument(
        "--engine",
        type=_names,
        default=("eager",),
        help="eager, compiled or both, comma-separated (default: eager); compiled = static KV cache + "
        "torch.compile'd decode step (prunebench.evaluation.engines)",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (recorded; default: torch's choice)")
    parser.add_argument("--base-model", help="measure this model interleaved for side-by-side speed-ups")
    parser.add_argument(
        "--out", required=True, help="result JSON (new, or an earlier result of this command: replaced)"
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from prunebench.evaluation.latency import (
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
        engines=args.engine,
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
    for line in summary_lines(result):
        print(line)
    for line in warnings(result):
        print(f"warning: {line}", file=sys.stderr)
    return 0


def _ms(row: dict, phase: str, suffix: str) -> str:
    """``median ms [p10-p90]`` of one phase of a measurement row."""
    median, p10, p90 = (row[f"{phase}_{stat}_{suffix}"] * 1e3 for stat in ("median", "p10", "p90"))
    return f"{median:.2f} ms [{p10:.2f}-{p90:.2f}]"


def summary_lines(result: dict) -> list[str]:
    """One line per measured row (medians with p10-p90) and per speed-up (paired p10-p90 beside the ideal)."""
    lines = []
    for row in result["measurements"]:
        cell = f"{row['engine']} {row['model']} batch {row['batch_size']} prompt {row['prompt_length']}"
        if row["status"] != "ok":
            lines.append(f"{cell}: {row['status']} ({row.get('error', '')})")
            continue
        compile_s = f", compile {row['compile_s']:.1f} s" if row.get("compile_s") is not None else ""
        lines.append(
            f"{cell}: prefill {_ms(row, 'prefill', 's')}, decode {_ms(row, 'decode', 's_per_token')}/token "
            f"(median [p10-p90] of {row['repeats']}; warm-up {row['warmup_s']:.1f} s{compile_s})"
        )
    for s in result.get("speedups", []):
        cell = f"speed-up {s['engine']} batch {s['batch_size']} prompt {s['prompt_length']}"
        if s["status"] != "ok":
            lines.append(f"{cell}: {s['status']}")
            continue
        lines.append(
            f"{cell}: prefill {s['measured_prefill']:.2f}x [{s['measured_prefill_paired_p10']:.2f}-"
            f"{s['measured_prefill_paired_p90']:.2f}] (ideal {s['ideal_prefill']:.2f}x, {s['prefill_bound']}-bound), "
            f"decode {s['measured_decode']:.2f}x [{s['measured_decode_paired_p10']:.2f}-"
            f"{s['measured_decode_paired_p90']:.2f}] (ideal {s['ideal_decode']:.2f}x, {s['decode_bound']}-bound)"
        )
    return lines


def warnings(result: dict) -> list[str]:
    """Cells whose measured speed-up is below :data:`FAR_BELOW` of the gain the ideal promises."""
    out = []
    for s in result.get("speedups", []):
        if s["status"] != "ok":
            continue
        for phase in ("prefill", "decode"):
            measured, ideal = s[f"measured_{phase}"], s[f"ideal_{phase}"]
            if ideal > 1 and measured - 1 < FAR_BELOW * (ideal - 1):
                out.append(
                    f"{s['engine']} batch {s['batch_size']} prompt {s['prompt_length']}: measured {phase} "
                    f"speed-up {measured:.2f}x gains less than {FAR_BELOW:.0%} of the ideal {ideal:.2f}x "
                    "(something other than FLOPs and bytes bounds it: per-call overhead, unaligned shapes, "
                    "or noise; see the spread)"
                )
    return out
