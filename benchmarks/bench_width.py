"""Cost of the width-pruning methods on the demo model (a benchmark script, not a timed test).

For each method it prints
- scoring time ÷ the time of one plain forward pass (``model(input_ids)``, same batches) over the
  same calibration samples (the faster of a run before and one after scoring);
- the time to produce plans for 5 ratios from one scoring (score once + 5 selects) ÷ the time for
  one ratio (score + 1 select) — what the score/select split saves over rerunning a method per ratio
  (which would cost 5×).

Usage (from the repository root)::

    PYTHONPATH=src nice -n 10 python benchmarks/bench_width.py \
        [--model resources/demo/model] [--text resources/demo/corpus] [--methods flap wanda-sp cfsp] \
        [--nsamples N] [--seqlen T] [--threads K]

``--nsamples``/``--seqlen`` default to each method's official values. Methods that are not
registered are reported and skipped. On a shared machine use ``--threads 1``: oversubscribed
OpenMP threads can make every forward pass an order of magnitude slower.
"""

from __future__ import annotations

import argparse
import time

import torch

from prunebench.data import calibration_samples, load_text
from prunebench.methods import available_methods, get_method
from prunebench.models import load_pretrained

RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5)
FORWARD_BATCH = 8


def forward_seconds(model: torch.nn.Module, samples: torch.Tensor) -> float:
    """Wall time of one plain forward pass over ``samples`` in batches of ``FORWARD_BATCH``."""
    start = time.perf_counter()
    with torch.no_grad():
        for batch in samples.split(FORWARD_BATCH):
            model(input_ids=batch)
    return time.perf_counter() - start


def bench(name: str, model: torch.nn.Module, tokenizer, text: str, args: argparse.Namespace) -> dict:
    method = get_method(name)
    params = {k: v for k, v in (("nsamples", args.nsamples), ("seqlen", args.seqlen)) if v is not None}
    config = method.config(params)
    samples = calibration_samples(tokenizer, text, config.nsamples, config.seqlen, config.seed)
    forward_seconds(model, samples[:FORWARD_BATCH])  # warm-up
    before = forward_seconds(model, samples)
    start = time.perf_counter()
    scores = method.score(model, samples, config)
    score = time.perf_counter() - start
    forward = min(before, forward_seconds(model, samples))  # the less disturbed of two runs
    selects = []
    for ratio in RATIOS:
        start = time.perf_counter()
        method.select(scores, model, ratio, config)
        selects.append(time.perf_counter() - start)
    return {
        "method": name,
        "calibration": f"{config.nsamples}x{config.seqlen}",
        "forward_s": forward,
        "score_s": score,
        "score_over_forward": score / forward,
        "select_s": sum(selects) / len(selects),
        "five_over_one": (score + sum(selects)) / (score + selects[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resources/demo/model")
    parser.add_argument("--text", default="resources/demo/corpus", help="calibration text (train split)")
    parser.add_argument("--methods", nargs="+", default=["flap", "wanda-sp", "cfsp"])
    parser.add_argument("--nsamples", type=int)
    parser.add_argument("--seqlen", type=int)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_pretrained(args.model)
    text = load_text(args.text, "train")
    registered = available_methods()
    print(f"model {args.model}, {torch.get_num_threads()} threads, ratios {list(RATIOS)}")
    header = f"{'method':10} {'calib':>9} {'forward s':>10} {'score s':>9} {'score/fwd':>10} {'select s':>9} {'5 ratios/1':>11}"
    print(header)
    for name in args.methods:
        if name not in registered:
            print(f"{name:10} not registered, skipped", flush=True)
            continue
        r = bench(name, model, tokenizer, text, args)
        print(
            f"{r['method']:10} {r['calibration']:>9} {r['forward_s']:10.2f} {r['score_s']:9.2f} "
            f"{r['score_over_forward']:10.2f} {r['select_s']:9.3f} {r['five_over_one']:11.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
