"""Cost of CFSP (and magnitude-sp) on one model: scoring vs. a plain forward, and 5 ratios vs. 1.

Prints, for each method:
  * scoring time / the time of one plain forward pass of the causal LM over the same calibration
    samples (one sample per forward, as CFSP's scoring does);
  * time to prune at 5 ratios from one scoring / time to prune at one ratio (score + select +
    physical surgery, the model copies made outside the timed region).

Usage (defaults: the demo model and corpus, 128 samples x 256 tokens, seed 0):
  PYTHONPATH=src python benchmarks/bench_cfsp.py [--model DIR] [--calib SOURCE] [--nsamples N] [--seqlen T]
      [--threads K]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from prunebench.data import calibration_samples, load_text
from prunebench.methods import get_method
from prunebench.models import apply_plan, load_pretrained

RATIOS = (0.1, 0.2, 0.25, 0.3, 0.4)


def plain_forward_seconds(model: torch.nn.Module, samples: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for sample in samples:
            model(input_ids=sample.unsqueeze(0), use_cache=False)
    return time.perf_counter() - start


def prune_seconds(method, scores, model: torch.nn.Module, ratios: tuple[float, ...], config) -> float:
    copies = [copy.deepcopy(model) for _ in ratios]
    start = time.perf_counter()
    for ratio, dense in zip(ratios, copies, strict=True):
        apply_plan(dense, method.select(scores, model, ratio, config))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="resources/demo/model")
    parser.add_argument("--calib", default="resources/demo/corpus")
    parser.add_argument("--nsamples", type=int, default=128)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.set_grad_enabled(False)
    model, tokenizer = load_pretrained(args.model)
    samples = calibration_samples(
        tokenizer, load_text(args.calib, "train"), args.nsamples, args.seqlen, args.seed
    )
    print(f"model {args.model}, calibration {tuple(samples.shape)}, {torch.get_num_threads()} threads")
    plain_forward_seconds(model, samples[:2])  # warm-up
    forward = plain_forward_seconds(model, samples)
    print(f"plain forward over the calibration set: {forward:.2f} s")
    for name, params in (("cfsp", {}), ("magnitude-sp", {})):
        method = get_method(name)
        config = method.config(params)
        start = time.perf_counter()
        scores = method.score(model, samples, config)
        score = time.perf_counter() - start
        one = prune_seconds(method, scores, model, RATIOS[1:2], config)
        five = prune_seconds(method, scores, model, RATIOS, config)
        print(
            f"{name:13s} score {score:.2f} s = {score / forward:.2f} x plain forward; "
            f"select+apply: 1 ratio {one:.3f} s, 5 ratios {five:.3f} s; "
            f"5 ratios / 1 ratio (incl. scoring) = {(score + five) / (score + one):.3f}"
        )


if __name__ == "__main__":
    main()
