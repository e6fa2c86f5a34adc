"""Measure the demo model: perplexities (validation, test, a test prefix, unigram) and lm-eval accuracies.

The results go to ``metrics.json`` beside the model; the model card and the regression test read them
from there, so no number is ever typed in by hand.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from prunebench.demo.atomic import write_text
from prunebench.demo.corpus import load_split
from prunebench.demo.model import load_model
from prunebench.demo.perplexity import perplexity, unigram_perplexity
from prunebench.demo.tasks import N_CHOICES, TASKS
from prunebench.demo.tokenizer import load_tokenizer

SEQLEN = 256
PREFIX_WINDOWS = 16  # the test-prefix perplexity that the fast regression test re-measures


def split_ids(corpus_dir: str | Path, split: str, tokenizer) -> torch.Tensor:
    """The whole split tokenized in one piece, no special tokens (the perplexity protocol's input)."""
    text = load_split(corpus_dir, split)
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def measure_perplexity(model_dir: str | Path, corpus_dir: str | Path, seqlen: int = SEQLEN) -> dict:
    """Validation and test perplexity, the test-prefix perplexity, and the unigram baseline."""
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir)
    ids = {s: split_ids(corpus_dir, s, tokenizer) for s in ("train", "validation", "test")}
    return {
        "protocol": f"non-overlapping {seqlen}-token windows of the concatenated split, no BOS, tail dropped",
        "validation": perplexity(model, ids["validation"], seqlen),
        "test": perplexity(model, ids["test"], seqlen),
        "test_prefix": perplexity(model, ids["test"], seqlen, max_windows=PREFIX_WINDOWS),
        "unigram_test_ppl": unigram_perplexity(ids["train"].tolist(), ids["test"].tolist(), len(tokenizer)),
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
    write_text(path, json.dumps(metrics, indent=2) + "\n")
    return path
