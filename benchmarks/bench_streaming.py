"""Peak memory of layer-streamed scoring against model depth, and the same decisions as in memory.

Builds random-initialised Llama models of one shape (default: Llama-2-7B, hidden 4096, intermediate
11008, 32 heads, vocab 32000) with each of ``--layers`` decoder layers, saved in bfloat16 tensor by tensor
(never a whole model in memory). Then, each in its own process:

1. ``prunebench score --stream`` (:func:`prunebench.steps.score_model` with ``stream=True``) for every
   method; the step's peak resident memory (``cost.peak_rss_bytes``, VmHWM reset at the step's start,
   so it includes the interpreter and everything else resident) and the process's own peak
   (``ru_maxrss``) are read back;
2. one in-memory process per depth: the whole model loaded, every method scored in memory, and the
   plans selected from the in-memory and the streamed scores compared (kept heads, channels, layer
   order, compensation biases), as well as every score tensor, bit for bit.

Prints a table and writes ``--out`` (JSON). Checks: peak(deepest) <= peak(shallowest) + half a layer's
weights, and peak(deepest) <= 25% of the deepest checkpoint's size. Example (the figures in
docs/measurements/streaming-cpu.md):

    nice -n 19 env PYTHONPATH=src python benchmarks/bench_streaming.py --work /tmp/streaming-bench \
        --layers 4 8 --methods flap cfsp shortgpt --nsamples 4 --seqlen 32 --threads 2 \
        --out docs/measurements/streaming-cpu.json

``--device cuda --device-budget 20GiB`` streams on a GPU (the streamed records then hold the device's peak).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

# Llama-2-7B (meta-llama/Llama-2-7b-hf config.json).
SHAPES = {
    "llama2-7b": {
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_attention_heads": 32,
        "vocab_size": 32000,
    },
    "smoke": {"hidden_size": 256, "intermediate_size": 2048, "num_attention_heads": 4, "vocab_size": 1000},
    # A small Llama (hidden 1024, Llama's 2.75x MLP, 8k vocabulary): the greedy searches on the shared CPU.
    "small": {"hidden_size": 1024, "intermediate_size": 2816, "num_attention_heads": 16, "vocab_size": 8000},
    "llama2-13b": {
        "hidden_size": 5120,
        "intermediate_size": 13824,
        "num_attention_heads": 40,
        "vocab_size": 32000,
    },
}
RATIOS = {
    "flap": 0.2,
    "cfsp": 0.2,
    "shortgpt": 0.25,
    "wanda-sp": 0.2,
    "magnitude-sp": 0.2,
    "blockpruner": 0.1,
    "sleb": 0.2,
    "finercut": 0.1,
}
#: The greedy searches' options: batches of 2 rows, BlockPruner and FinerCut stopped after 6 steps.
GREEDY = {"blockpruner": {"max_steps": 6}, "finercut": {"max_steps": 6, "exclude": 0.0}, "sleb": {}}


def build_model(path: Path, shape: str, layers: int, seed: int = 0) -> int:
    """A random Llama of ``shape`` with ``layers`` layers in bf16 at ``path`` (std 0.02, norms 1), one
    safetensors shard per decoder layer plus one for the rest, drawn and written a shard at a time;
    returns the checkpoint's size in bytes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if not (path / "config.json").is_file():
        config = LlamaConfig(
            **SHAPES[shape],
            num_hidden_layers=layers,
            num_key_value_heads=SHAPES[shape]["num_attention_heads"],
            max_position_embeddings=4096,
            tie_word_embeddings=False,
        )
        with torch.device("meta"):
            skeleton = LlamaForCausalLM(config)
        generator = torch.Generator().manual_seed(seed)
        path.mkdir(parents=True, exist_ok=True)
        groups: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
        for name, param in skeleton.named_parameters():
            part = name.split(".")[2] if name.startswith("model.layers.") else "rest"
            groups.setdefault(part, []).append((name, tuple(param.shape)))
        weight_map = {}
        for part, params in groups.items():
            file = f"model-{part}.safetensors"
            shard = {
                name: torch.ones(shape_, dtype=torch.bfloat16)
                if len(shape_) == 1
                else (torch.randn(shape_, generator=generator) * 0.02).to(torch.bfloat16)
                for name, shape_ in params
            }
            save_file(shard, str(path / file), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, file))
            del shard
        index = {"metadata": {}, "weight_map": weight_map}
        (path / "model.safetensors.index.json").write_text(json.dumps(index))
        config.save_pretrained(path)
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


def layer_bytes(shape: str) -> int:
    s = SHAPES[shape]
    h, m = s["hidden_size"], s["intermediate_size"]
    return 2 * (4 * h * h + 3 * h * m + 2 * h)


def streamed(args: argparse.Namespace) -> None:
    """(child) Score one model with streaming; print the cost record as JSON."""
    from prunebench.steps import score_model

    torch.set_num_threads(args.threads)
    budget = None if args.device_budget is None else args.device_budget
    cpu = time.process_time()
    scores = score_model(
        args.model,
        args.method,
        args.scores,
        samples_path=args.samples,
        params=_params(args.method),
        dtype=torch.bfloat16,
        device=args.device,
        stream=True,
        device_budget=budget,
    )
    record = {
        "step_peak_rss_bytes": scores.meta["cost"]["peak_rss_bytes"],
        "process_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "wall_s": scores.meta["cost"]["wall_s"],
        "cpu_s": time.process_time() - cpu,  # the whole call: also the skeleton and the samples read
        "streaming": scores.meta["streaming"],
        **{key: scores.meta[key] for key in ("order", "streamed_search") if key in scores.meta},
    }
    print("RESULT " + json.dumps(record))


def resident(args: argparse.Namespace) -> None:
    """(child) Score every method in memory; compare tensors and plans with the streamed scores."""
    from prunebench.data import load_samples
    from prunebench.evaluation.cost import measure_cost
    from prunebench.methods import Scores, get_method
    from prunebench.models import load_pretrained

    torch.set_num_threads(args.threads)
    model, _ = load_pretrained(args.model, dtype=torch.bfloat16)
    samples = load_samples(args.samples)
    out = {}
    for name, scores_dir in zip(args.methods, args.scores_dirs, strict=True):
        method = get_method(name)
        config = method.config(_params(name))
        cpu = time.process_time()
        with measure_cost("score") as cost:
            memory = method.score(model, samples, config)
        cpu = time.process_time() - cpu
        stream = Scores.load(scores_dir)
        same_tensors = memory.tensors.keys() == stream.tensors.keys() and all(
            torch.equal(memory.tensors[k], stream.tensors[k]) for k in memory.tensors
        )
        first = method.select(memory, model, RATIOS[name], config)
        second = method.select(stream, model, RATIOS[name], config)
        same_plan = _decisions(first) == _decisions(second) and _compensation(first) == _compensation(second)
        out[name] = {
            "same_scores": same_tensors,
            "same_plan": same_plan,
            "resident_wall_s": cost["wall_s"],
            "resident_cpu_s": cpu,
            "resident_step_peak_rss_bytes": cost["peak_rss_bytes"],
            "plan_layers": len(first.layers),
        }
        if "order" in memory.meta:
            out[name]["same_order"] = memory.meta["order"] == stream.meta["order"]
    print("RESULT " + json.dumps(out))


def _decisions(plan) -> dict:
    """The plan without ``base_model`` (a greedy method's plan names the scores' model path, which only the
    streamed scores record)."""
    return {key: value for key, value in plan.to_json().items() if key != "base_model"}


def _compensation(plan) -> dict:
    return {
        layer: {k: v.tolist() for k, v in parts.items()} for layer, parts in (plan.compensation or {}).items()
    }


def _params(method: str) -> dict:
    if method in GREEDY:
        return {"batch_size": 2, **GREEDY[method]}
    return {"batch_size": 2} if method in ("flap", "shortgpt", "wanda-sp") else {}


def _child(*argv: str) -> dict:
    """Run this script in a fresh process (own peak memory) and parse its RESULT line."""
    done = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"child {argv[:2]} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="role")
    child = sub.add_parser("streamed")
    for flag in ("--model", "--method", "--scores", "--samples", "--device"):
        child.add_argument(flag, required=True)
    child.add_argument("--device-budget", type=int)
    child.add_argument("--threads", type=int, default=1)
    child = sub.add_parser("resident")
    for flag in ("--model", "--samples"):
        child.add_argument(flag, required=True)
    child.add_argument("--methods", nargs="+", required=True)
    child.add_argument("--scores-dirs", nargs="+", required=True)
    child.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/streaming-bench"))
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama2-7b")
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--methods", nargs="+", default=["flap", "cfsp", "shortgpt"])
    parser.add_argument("--nsamples", type=int, default=4)
    parser.add_argument("--seqlen", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--device-budget", help="e.g. 20GiB (with a GPU)")
    parser.add_argument("--no-resident", action="store_true", help="skip the in-memory comparison")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.role == "streamed":
        return streamed(args)
    if args.role == "resident":
        return resident(args)
    run(args)


def run(args: argparse.Namespace) -> None:
    from prunebench.data import save_samples
    from prunebench.models.streaming import format_bytes, parse_bytes

    args.work.mkdir(parents=True, exist_ok=True)
    vocab = SHAPES[args.shape]["vocab_size"]
    samples = args.work / "samples.safetensors"
    save_samples(
        torch.randint(0, vocab, (args.nsamples, args.seqlen), generator=torch.Generator().manual_seed(0)),
        samples,
    )
    budget = None if args.device_budget is None else str(parse_bytes(args.device_budget))
    rows, checks = [], {}
    for layers in args.layers:
        model = args.work / f"{args.shape}-{layers}l"
        size = build_model(model, args.shape, layers)
        dirs = []
        for method in args.methods:
            scores = args.work / f"scores-{layers}l-{method}"
            dirs.append(str(scores))
            extra = ["--device-budget", budget] if budget else []
            record = _child(
                "streamed", "--model", str(model), "--method", method, "--scores", str(scores),
                "--samples", str(samples), "--device", args.device, "--threads", str(args.threads), *extra,
            )  # fmt: skip
            rows.append({"layers": layers, "method": method, "checkpoint_bytes": size, **record})
        if not args.no_resident:
            same = _child(
                "resident", "--model", str(model), "--samples", str(samples), "--threads", str(args.threads),
                "--methods", *args.methods, "--scores-dirs", *dirs,
            )  # fmt: skip
            for row in rows:
                if row["layers"] == layers:
                    row.update(same[row["method"]])
    shallow, deep = min(args.layers), max(args.layers)
    half_layer = layer_bytes(args.shape) / 2
    print(f"{args.shape}, bf16, {args.nsamples} x {args.seqlen} tokens, device {args.device}; one layer "
          f"{format_bytes(2 * half_layer)}")  # fmt: skip
    for row in rows:
        print(
            f"{row['method']:9s} {row['layers']:2d} layers  checkpoint {format_bytes(row['checkpoint_bytes']):>10s}  "
            f"step peak RSS {format_bytes(row['step_peak_rss_bytes']):>10s}  process peak "
            f"{format_bytes(row['process_peak_rss_bytes']):>10s}  {row['wall_s']:7.1f} s  "
            f"same scores {row.get('same_scores')}  same plan {row.get('same_plan')}"
            + (
                f"  resident: step peak RSS {format_bytes(row['resident_step_peak_rss_bytes'])}, "
                f"{row['resident_wall_s']:.1f} s, streamed/resident time {row['wall_s'] / row['resident_wall_s']:.2f}x"
                f" (CPU time {row['cpu_s']:.1f} s / {row['resident_cpu_s']:.1f} s = "
                f"{row['cpu_s'] / row['resident_cpu_s']:.2f}x)"
                if "resident_wall_s" in row
                else ""
            )
            + (
                f"  same order {row.get('same_order')}: {' '.join(f'{layer}.{part}' for layer, part in row['order'])}"
                if "order" in row
                else ""
            )
            + (f"  search {row['streamed_search']}" if "streamed_search" in row else "")
            + (
                f"  device peak {format_bytes(row['streaming']['device_peak_bytes'])}"
                if row["streaming"]["device_peak_bytes"] is not None
                else ""
            )
        )
    for method in args.methods:
        by = {r["layers"]: r for r in rows if r["method"] == method}
        peak_deep = by[deep]["step_peak_rss_bytes"]
        checks[method] = {
            "deep_minus_shallow_bytes": peak_deep - by[shallow]["step_peak_rss_bytes"],
            "half_layer_bytes": half_layer,
            "depth_independent": peak_deep <= by[shallow]["step_peak_rss_bytes"] + half_layer,
            "share_of_checkpoint": peak_deep / by[deep]["checkpoint_bytes"],
            "within_25_percent": peak_deep <= 0.25 * by[deep]["checkpoint_bytes"],
        }
        print(
            f"{method:9s} peak({deep}) - peak({shallow}) = {format_bytes(checks[method]['deep_minus_shallow_bytes'])} "
            f"(limit {format_bytes(half_layer)}): {checks[method]['depth_independent']};  peak({deep}) = "
            f"{100 * checks[method]['share_of_checkpoint']:.1f}% of the checkpoint (limit 25%): "
            f"{checks[method]['within_25_percent']}"
        )
    if args.out is not None:
        command = "python benchmarks/bench_streaming.py " + " ".join(sys.argv[1:])
        doc = {"command": command, "shape": args.shape, "rows": rows, "checks": checks}
        args.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
