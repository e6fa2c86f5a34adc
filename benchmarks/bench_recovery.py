"""Does each recovery variant lower the test perplexity of a pruned model, under a small budget?

Prunes the demo model to a decoder ratio (default 0.3) with a registered method (``--method``) or,
by default, a hand-written L2-magnitude width plan (per layer, the KV groups and MLP channels with
the largest weight norms, counts from ``nearest_keep_counts``, the rule the recorded figures used),
then runs every recovery variant with the same budget and reports test perplexity before and after,
with wall time.

    PYTHONPATH=src nice -n 10 python benchmarks/bench_recovery.py --steps 50 --out results/bench_recovery
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from prunebench.data import load_text
from prunebench.evaluation.perplexity import perplexity
from prunebench.methods.width_budget import nearest_keep_counts
from prunebench.models import get_adapter, load_pretrained
from prunebench.plan import LayerPlan, PruningPlan
from prunebench.recovery import Budget, RecoveryConfig, available_variants, recover
from prunebench.steps import prune_model, write_pruned


def magnitude_plan(model: torch.nn.Module, ratio: float, base: str) -> PruningPlan:
    """Keep, in every layer, the KV groups and MLP channels with the largest L2 weight norms."""
    adapter = get_adapter(model)
    kv_keep, ch_keep = nearest_keep_counts(adapter, ratio)
    layers = {}
    for i in range(adapter.num_layers):
        attn, mlp = adapter.attention(i), adapter.mlp(i)
        hd, g = adapter.head_dim, adapter.group_size
        q = attn.q_proj.weight.view(adapter.num_kv_heads, g * hd, -1).pow(2).sum((1, 2))
        k = attn.k_proj.weight.view(adapter.num_kv_heads, hd, -1).pow(2).sum((1, 2))
        v = attn.v_proj.weight.view(adapter.num_kv_heads, hd, -1).pow(2).sum((1, 2))
        o = attn.o_proj.weight.view(-1, adapter.num_kv_heads, g * hd).pow(2).sum((0, 2))
        groups = (q + k + v + o).topk(kv_keep).indices.sort().values.tolist()
        ch = (
            mlp.gate_proj.weight.pow(2).sum(1)
            + mlp.up_proj.weight.pow(2).sum(1)
            + mlp.down_proj.weight.pow(2).sum(0)
        )
        channels = ch.topk(ch_keep).indices.sort().values.tolist()
        layers[i] = LayerPlan(kv_heads=groups, mlp_channels=channels)
    return PruningPlan(
        base, "l2-magnitude (bench)", {}, ratio, layers, notes={"by": "benchmarks/bench_recovery.py"}
    )


def test_ppl(model_dir: str, text: str, seqlen: int, max_windows: int | None) -> float:
    model, tokenizer = load_pretrained(model_dir)
    return perplexity(model, tokenizer, text, seqlen, max_windows=max_windows)["ppl"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="resources/demo/model")
    parser.add_argument("--corpus", default="resources/demo/corpus")
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--method", help="a registered pruning method (default: the hand-written plan)")
    parser.add_argument("--variants", default=",".join(available_variants()))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--ppl-seqlen", type=int, default=128)
    parser.add_argument("--max-windows", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/bench_recovery")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = load_text(args.corpus, "test")
    pruned = str(out / "pruned")
    if args.method:
        plan = prune_model(args.model, args.method, args.ratio, pruned, calib=args.corpus)
    else:
        model, tokenizer = load_pretrained(args.model)
        plan = write_pruned(model, tokenizer, magnitude_plan(model, args.ratio, args.model), pruned)
    rows = {
        "dense": {"ppl": test_ppl(args.model, text, args.ppl_seqlen, args.max_windows)},
        "none": {"ppl": test_ppl(pruned, text, args.ppl_seqlen, args.max_windows)},
    }
    config = RecoveryConfig(batch_size=args.batch_size, seqlen=args.seqlen, lr=args.lr)
    for variant in args.variants.split(","):
        start = time.perf_counter()
        summary = recover(
            pruned,
            variant,
            args.corpus,
            str(out / variant),
            Budget(steps=args.steps),
            seed=args.seed,
            config=config,
        )
        rows[variant] = {
            "ppl": test_ppl(str(out / variant), text, args.ppl_seqlen, args.max_windows),
            "wall_s": round(time.perf_counter() - start, 1),
            "train_s": summary["train_time_s"],
            "val_loss": [summary["val_loss_before"], summary["val_loss_after"]],
        }
        print(variant, rows[variant], flush=True)
    result = {
        "model": args.model,
        "pruning": plan.method,
        "achieved": plan.achieved,
        "budget": {"steps": args.steps, "batch_size": args.batch_size, "seqlen": args.seqlen, "lr": args.lr},
        "ppl_seqlen": args.ppl_seqlen,
        "threads": torch.get_num_threads(),
        "rows": rows,
    }
    (out / "bench_recovery.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"pruned by {plan.method} to decoder ratio {plan.achieved['decoder_ratio']:.3f}; budget {result['budget']}"
    )
    print("| recovery | test ppl | wall s |\n|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['ppl']:.2f} | {row.get('wall_s', '')} |")


if __name__ == "__main__":
    main()
