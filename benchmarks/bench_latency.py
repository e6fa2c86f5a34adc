"""Measured vs ideal speed-up of physically pruned models, dense model interleaved as the base.

Builds a random-initialised Llama of a given shape (weights do not matter for speed, so nothing is
downloaded), prunes copies of it by hand-written plans -- a width plan (the same number of KV groups and
MLP channels removed from every layer) and a depth plan (whole blocks removed from the back, the last block
kept) at each ratio -- and times each pruned model against the dense one with
``prunebench.evaluation.latency.measure_latency`` (A, B, A, B, ... repeats). Prints measured vs ideal
speed-ups and writes the full JSON.

    python benchmarks/bench_latency.py --shape llama2-7b --ratios 0.2,0.5 --batch-sizes 1,8 \
        --prompt-lengths 128,512 --new-tokens 64 --out docs/measurements/latency-llama2-7b-h100.json
    python benchmarks/bench_latency.py --config resources/demo/model/config.json ...   # any Llama config
    python benchmarks/bench_latency.py --model resources/demo/model --engines eager,compiled ...  # real weights

``--engines eager,compiled`` times both engines (``prunebench.evaluation.engines``) in the same rounds;
``--plans width,width-aligned,depth`` adds a width plan whose kept widths are rounded to multiples of
``--round-to`` (``prunebench.methods.width_budget.align_count``).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from prunebench.errors import PrunebenchError
from prunebench.evaluation.engines import ENGINES
from prunebench.evaluation.latency import LatencyConfig, measure_latency, validate_config
from prunebench.io import atomic_write_json
from prunebench.methods.width_budget import align_count, kv_unit, nearest_keep_counts
from prunebench.models import apply_plan, get_adapter, load_pretrained
from prunebench.models.counting import achieved_ratios
from prunebench.plan import LayerPlan, PruningPlan

SHAPES = {
    # Llama-2-7B (meta-llama/Llama-2-7b-hf config.json): MHA, 32 layers
    "llama2-7b": dict(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
    ),
    # Llama-3-8B (meta-llama/Meta-Llama-3-8B config.json): GQA with 8 KV heads
    "llama3-8b": dict(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=8192,
        rope_theta=500000.0,
    ),
    # small enough for a CPU run in seconds
    "small": dict(
        vocab_size=8192,
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=2048,
    ),
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def build_dense(config: LlamaConfig, dtype: torch.dtype, device: str) -> LlamaForCausalLM:
    """A random-initialised model created directly on ``device`` in ``dtype``."""
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    return model.eval()


def width_plan(model, ratio: float) -> PruningPlan:
    """Keep the first KV groups and MLP channels of every layer, as many as ``nearest_keep_counts`` says.

    That rule (KV groups rounded to the nearest count) is not the official Wanda-sp one; it stays here
    because the recorded latency figures (docs/measurements/latency-h100.md) were measured with it.
    """
    adapter = get_adapter(model)
    kv_keep, ch_keep = nearest_keep_counts(adapter, ratio)
    layers = {
        i: LayerPlan(kv_heads=list(range(kv_keep)), mlp_channels=list(range(ch_keep)))
        for i in range(adapter.num_layers)
    }
    return PruningPlan("random", "hand_width", {}, ratio, layers)


def aligned_width_plan(model, ratio: float, round_to: int) -> PruningPlan:
    """:func:`width_plan` with the kept KV groups and MLP channels rounded to multiples (``align_count``)."""
    adapter = get_adapter(model)
    kv_keep, ch_keep = nearest_keep_counts(adapter, ratio)
    kv_keep = align_count(kv_keep, kv_unit(adapter, round_to), adapter.num_kv_heads)
    ch_keep = align_count(ch_keep, round_to, adapter.intermediate_size)
    layers = {
        i: LayerPlan(kv_heads=list(range(kv_keep)), mlp_channels=list(range(ch_keep)))
        for i in range(adapter.num_layers)
    }
    return PruningPlan("random", f"hand_width_round{round_to}", {}, ratio, layers)


def depth_plan(model, ratio: float) -> PruningPlan:
    """Remove round(ratio * layers) whole blocks, from the second-to-last one backwards."""
    layers = get_adapter(model).num_layers
    count = round(ratio * layers)
    if not 0 < count < layers:
        raise PrunebenchError(f"ratio {ratio} removes {count} of {layers} blocks; need at least one, not all")
    removed = range(layers - 2, layers - 2 - count, -1)
    return PruningPlan("random", "hand_depth", {}, ratio, {i: LayerPlan([], []) for i in removed})


def format_speedup(variant: str, achieved: float, s: dict) -> str:
    """One printed line: measured vs ideal speed-ups of a variant at one batch size and prompt length."""
    cell = f"{variant:<24}{achieved:>9.3f}{s['batch_size']:>6}{s['prompt_length']:>7}  "
    if s["status"] != "ok":
        return cell + s["status"]
    return (
        f"{cell}{s['measured_prefill']:>6.2f}x / {s['ideal_prefill']:.2f}x   "
        f"{s['measured_decode']:>6.2f}x / {s['ideal_decode']:.2f}x ({s['decode_bound']})"
    )


def format_roofline(row: dict) -> str:
    """The dense model's decode against its roofline (weight and KV reads at the measured bandwidth)."""
    return (
        f"dense {row['engine']} batch {row['batch_size']} prompt {row['prompt_length']}: decode "
        f"{row['decode_median_s_per_token'] * 1e3:.2f} ms/token, roofline "
        f"{row['decode_roofline_s_per_token'] * 1e3:.2f} ms ({row['decode_bound']}-bound), "
        f"{row['decode_fraction_of_roofline']:.2f} of it; prefill {row['prefill_fraction_of_peak_flops']:.2f} "
        f"of peak FLOP/s"
    )


def parse_ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shape = parser.add_mutually_exclusive_group(required=True)
    shape.add_argument("--shape", choices=sorted(SHAPES))
    shape.add_argument("--config", type=Path, help="a Llama config.json to take the shape from")
    shape.add_argument("--model", type=Path, help="a checkpoint directory: its real weights are timed")
    parser.add_argument("--ratios", default="0.2,0.5")
    parser.add_argument("--plans", default="width,depth")
    parser.add_argument("--batch-sizes", default="1")
    parser.add_argument("--prompt-lengths", default="128")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--engines", default="eager", help=f"comma-separated, of {', '.join(ENGINES)}")
    parser.add_argument("--round-to", type=int, default=8, help="multiple of the width-aligned plan")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--min-repeats", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtype", choices=sorted(DTYPES), default=None, help="bfloat16 on GPU, float32 on CPU"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        dtype = DTYPES[args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")]
        latency_config = LatencyConfig(
            batch_sizes=parse_ints(args.batch_sizes),
            prompt_lengths=parse_ints(args.prompt_lengths),
            new_tokens=args.new_tokens,
            warmup=args.warmup,
            min_repeats=args.min_repeats,
            min_seconds=args.min_seconds,
            engines=tuple(args.engines.split(",")),
        )
        validate_config(latency_config)
        makers = {
            "width": width_plan,
            "width-aligned": lambda model, ratio: aligned_width_plan(model, ratio, args.round_to),
            "depth": depth_plan,
        }
        unknown = set(args.plans.split(",")) - set(makers)
        if unknown:
            raise PrunebenchError(f"unknown plan kind(s) {sorted(unknown)}; choose from {sorted(makers)}")
        if args.model:
            dense, _ = load_pretrained(str(args.model), dtype=dtype, device=torch.device(args.device))
            dense.eval()
            config = dense.config
        else:
            config = (
                LlamaConfig.from_json_file(args.config) if args.config else LlamaConfig(**SHAPES[args.shape])
            )
            dense = build_dense(config, dtype, args.device)
        runs = []
        print(
            f"{'engine variant':<24}{'achieved':>9}{'batch':>6}{'prompt':>7}  prefill meas/ideal  decode meas/ideal"
        )
        for kind in args.plans.split(","):
            for ratio in (float(r) for r in args.ratios.split(",")):
                plan = makers[kind](dense, ratio)
                pruned = apply_plan(copy.deepcopy(dense), plan)
                result = measure_latency(pruned, latency_config, base=dense)
                result["variant"] = {"plan": kind, "target_ratio": ratio, **achieved_ratios(pruned, dense)}
                runs.append(result)
                for row in result["measurements"]:
                    if row["model"] == "base" and row["status"] == "ok" and len(runs) == 1:
                        print(format_roofline(row))
                for s in result["speedups"]:
                    print(
                        format_speedup(
                            f"{s['engine'][:4]} {kind}@{ratio}", result["variant"]["decoder_ratio"], s
                        )
                    )
                del pruned
    except PrunebenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    command = " ".join(["python benchmarks/bench_latency.py", *(sys.argv[1:] if argv is None else argv)])
    atomic_write_json(args.out, {"command": command, "shape": config.to_dict(), "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
