"""Measure the demo model (perplexities, lm-eval on the local tasks) into resources/demo/model/metrics.json.

Usage: python workflow/scripts/evaluate_demo_model.py [--model-dir DIR] [--corpus DIR] [--tasks DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import os

from prunebench.demo.entry import run
from prunebench.demo.evaluate import measure_perplexity, run_lm_eval, write_metrics


def main() -> None:
    """Parse arguments, measure, write metrics.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="resources/demo/model")
    parser.add_argument("--corpus", default="resources/demo/corpus")
    parser.add_argument("--tasks", default="resources/demo/tasks")
    parser.add_argument("--limit", type=int, default=None, help="items per task for lm-eval (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")
    import torch

    torch.set_num_threads(args.threads)
    metrics = {"perplexity": measure_perplexity(args.model_dir, args.corpus)}
    print(metrics, flush=True)
    metrics["zero_shot"] = run_lm_eval(args.model_dir, args.tasks, args.limit)
    print(write_metrics(metrics, args.model_dir))


if __name__ == "__main__":
    run(main)
