"""Measure the demo model: perplexities (validation, test, a test prefix, unigram) and lm-eval accuracies.

The results go to ``metrics.json`` beside the model; the model card and the regression test read them
from there, so no number is ever typed in by hand.
"""

from __future__ import annotations

import json
import math
import platform
from collections import Counter
from pathlib import Path

import torch

from prunebench.data.calibration import tokenize
from prunebench.demo.corpus import load_split
from prunebench.demo.model import load_model
from prunebench.demo.tasks import N_CHOICES, TASKS
from prunebench.demo.tokenizer import load_tokenizer
from prunebench.evaluation.perplexity import perplexity
from prunebench.io import atomic_write_text

SEQLEN = 256
PREFIX_WINDOWS = 16  # the test-prefix perplexity that the fast regression test re-measures


def unigram_perplexity(train_ids: list[int], test_ids: list[int], vocab_size: int) -> float:
    """Perplexity of a unigram model (train counts, add-one smoothing over the vocabulary) on test ids."""
    counts = Counter(train_ids)
    denom = len(train_ids) + vocab_size
    nll = -sum(math.log((counts[t] + 1) / denom) for t in test_ids) / len(test_ids)
    return math.exp(nll)


def measure_perplexity(model_dir: str | Path, corpus_dir: str | Path, seqlen: int = SEQLEN) -> dict:
    """Validation and test perplexity (the core protocol), the test-prefix perplexity, the unigram baseline."""
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir)
    text = {s: load_split(corpus_dir, s) for s in ("train", "validation", "test")}

    def ppl(split: str, max_windows: int | None = None) -> dict:
        return perplexity(model, tokenizer, text[split], seqlen, max_windows=max_windows, progress=False)

    train_ids, test_ids = (tokenize(tokenizer, text[s]).tolist() for s in ("train", "test"))
    return {
        "protocol": f"non-overlapping {seqlen}-token windows of the concatenated split, no BOS, tail dropped",
        "validation": ppl("validation"),
        "test": ppl("test"),
        "test_prefix": ppl("test", PREFIX_WINDOWS),
        "unigram_test_ppl": unigram_perplexity(train_ids, test_ids, len(tokenizer)),
        "unigram_protocol": "train-split token counts, add-one smoothing, over every test token",
    }


def run_lm_eval(
    model_dir: str | Path, tasks_dir: str | Path, limit: int | None = None, batch_size: int = 16
) -> dict:
    """Run lm-eval's ``hf`` model on the three local tasks; acc / acc_norm with stderr and chance level."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={Path(model_dir).resolve()},dtype=float32",
        tasks=list(TASKS),
        task_manager=TaskManager(include_path=str(Path(tasks_dir).resolve())),
        batch_size=batch_size,
        limit=limit,
        device="cpu",
    )
    tasks = {}
    for task in TASKS:
        r = out["results"][task]
        tasks[task] = {
            "acc": r["acc,none"],
            "acc_stderr": r["acc_stderr,none"],
            "acc_norm": r["acc_norm,none"],
            "acc_norm_stderr": r["acc_norm_stderr,none"],
            "n": out["n-samples"][task]["effective"],
            "chance": 1 / N_CHOICES,
        }
    return {"lm_eval_version": lm_eval.__version__, "limit": limit, "tasks": tasks}


def write_metrics(metrics: dict, model_dir: str | Path) -> Path:
    """Write ``metrics.json`` beside the model (atomically), with the software versions."""
    import transformers

    metrics = {
        **metrics,
        "software": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
    }
    path = Path(model_dir) / "metrics.json"
    atomic_write_text(path, json.dumps(metrics, indent=2) + "\n")
    return path
