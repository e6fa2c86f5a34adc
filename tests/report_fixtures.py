"""A synthetic study results table: two models, two data sets, two recoveries, three methods and dense.

Method ``a`` is better than ``b`` beyond the uncertainty in perplexity (every window 0.2 nats lower)
and in accuracy (0.60 vs 0.40, standard errors 0.01); ``c`` differs from ``a`` by noise only (per-window
differences of mean 0), and its accuracy is within the standard errors. ``a`` and ``c`` share one plan
shape, so their latency is pooled; ``b`` has its own.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from prunebench.report.tables import COLUMNS

MODELS = {"m1": 10.0, "m2": 30.0}  # dense perplexity (nats: log of it)
DATASETS = ["d1", "d2"]
SEQLEN = 64
TASKS = ["boolq", "hellaswag"]
RATIOS = [0.2, 0.4]
RECOVERIES = ["none", "lora"]
METHODS = ["a", "b", "c"]
WINDOWS = 16
ACCURACY = {"dense": 0.70, "a": 0.60, "b": 0.40, "c": 0.595}
SHAPE = {"a": "s1", "c": "s1", "b": "s2"}
DECODE = {"a": [1.50, 1.52, 1.48, 1.51], "c": [1.20, 1.22, 1.18, 1.21], "b": [1.05, 1.07, 1.03, 1.06]}


def _windows(model: str, method: str, ratio: float, recovery: str, dataset: str) -> np.ndarray:
    rng = np.random.default_rng(10 * list(MODELS).index(model) + DATASETS.index(dataset))
    base = np.log(MODELS[model]) + rng.normal(0, 0.3, WINDOWS)
    if method == "dense":
        return base
    shift = ratio + (0.2 if method == "b" else 0.0) - (0.05 if recovery == "lora" else 0.0)
    noise = np.random.default_rng(7).normal(0, 0.02, WINDOWS) if method == "c" else 0.0
    return base + shift + noise - (np.mean(noise) if method == "c" else 0.0)


def synthetic() -> tuple[pd.DataFrame, dict]:
    """The results table and its per-window NLLs (``prunebench.report.findings.Windows``)."""
    rows, windows = [], {}
    for model in MODELS:
        variants = [("dense", 0.0, "none")] + [
            (m, r, rec) for m in METHODS for r in RATIOS for rec in RECOVERIES
        ]
        for method, ratio, recovery in variants:
            identity = dict.fromkeys(COLUMNS) | {
                "model": model, "method": method, "method_label": method.upper() if method != "dense" else method,
                "target_ratio": ratio, "recovery": recovery, "achieved_decoder_ratio": ratio,
                "achieved_total_ratio": ratio * 0.8, "attention_removed": ratio, "mlp_removed": ratio,
                "total_params": 1e6 * (1 - ratio), "shape": SHAPE.get(method, "dense"),
            }  # fmt: skip
            for dataset in DATASETS:
                nll = _windows(model, method, ratio, recovery, dataset)
                windows[(model, method, ratio, recovery, dataset, SEQLEN)] = nll.tolist()
                ppl = float(np.exp(nll.mean()))
                se = float(nll.std(ddof=0) / np.sqrt(len(nll)))
                rows.append(identity | {"kind": "ppl", "dataset": dataset, "seqlen": SEQLEN, "metric": "ppl",
                                        "value": ppl, "stderr": ppl * se})  # fmt: skip
            for task in TASKS:
                value = ACCURACY[method] - ratio / 10 + (0.02 if recovery == "lora" else 0.0)
                rows.append(identity | {"kind": "zeroshot", "task": task, "metric": "acc_norm", "value": value,
                                        "stderr": 0.01})  # fmt: skip
            if method != "dense" and recovery == "none":
                ratios = np.array(DECODE[method]) * (1 + ratio)
                rows.append(identity | {"kind": "latency", "metric": "decode_median_s_per_token",
                                        "value": 0.01 / np.median(ratios), "p10": 0.009 / np.median(ratios),
                                        "p90": 0.011 / np.median(ratios), "batch_size": 1, "prompt_length": 64})  # fmt: skip
                pooled = np.concatenate(
                    [np.array(DECODE[m]) * (1 + ratio) for m in METHODS if SHAPE[m] == SHAPE[method]]
                )
                for metric, values in (
                    ("measured_decode", ratios),
                    ("pooled_decode", pooled),
                    ("measured_prefill", ratios),
                    ("pooled_prefill", pooled),
                ):
                    p10, median, p90 = np.percentile(values, [10, 50, 90])
                    shared = sum(SHAPE[m] == SHAPE[method] for m in METHODS)
                    rows.append(identity | {"kind": "speedup", "metric": metric, "value": median, "p10": p10,
                                            "p90": p90, "n": shared if metric.startswith("pooled") else len(values),
                                            "batch_size": 1, "prompt_length": 64})  # fmt: skip
                for metric in ("ideal_decode_flops", "ideal_prefill_flops"):
                    rows.append(identity | {"kind": "speedup", "metric": metric, "value": 1 / (1 - ratio),
                                            "batch_size": 1, "prompt_length": 64})  # fmt: skip
            if method == "dense":
                rows.append(identity | {"kind": "latency", "metric": "decode_median_s_per_token", "value": 0.01,
                                        "p10": 0.009, "p90": 0.011, "batch_size": 1, "prompt_length": 64})  # fmt: skip
            for task, seconds in (("score", 10.0), ("prune", 2.0), ("evaluate", 5.0)):
                if method != "dense" or task == "evaluate":
                    rows.append(
                        identity | {"kind": "cost", "task": task, "metric": "seconds", "value": seconds}
                    )
    return pd.DataFrame(rows)[COLUMNS], windows


def config(**extra) -> dict:
    """A study config naming the synthetic methods (``a`` twice removed from the registry: an ablation)."""
    return {
        "study": "synthetic",
        "seed": 0,
        "models": {m: {"path": f"missing/{m}", "device": "cpu", "dtype": "float32"} for m in MODELS},
        "methods": {m: {"kind": "rule"} for m in METHODS},
        "ratios": RATIOS,
        "recovery": {r: {} for r in RECOVERIES},
        "evaluation": {"zeroshot": {"headline": "acc_norm"}, "ppl": {"datasets": {d: d for d in DATASETS},
                                                                     "seqlens": [SEQLEN]}},
    } | extra  # fmt: skip
