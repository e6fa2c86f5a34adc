"""The study's answer: per model x ratio x recovery, the methods ranked by perplexity and by accuracy.

A rank counts only differences beyond the uncertainty: a method's rank is 1 + the number of methods
of the same setting that are better than it beyond the 95% interval, so methods whose differences are
within the uncertainty share a rank (a tie).

- Perplexity (the headline data set and window): the difference of two methods is paired over the same
  evaluation windows, the per-window mean-NLL difference's mean and standard error
  (:func:`prunebench.report.claims.paired_nll_difference`), beyond ``Z`` = 1.96 standard errors
  (:func:`prunebench.report.claims.outcome`). Its interval: ``ppl * exp(±Z * nll_se)`` over windows.
- Accuracy (the headline metric, the mean over tasks): lm-eval's standard error per task, combined as
  ``sqrt(sum se²) / tasks``; two methods differ when the difference exceeds ``Z`` times
  ``sqrt(se_a² + se_b²)`` (unpaired, so conservative). No standard error: no difference is claimed.
- Speed-up: the pooled decode and prefill speed-up of the method's plan shape (median and p10-p90 of
  every per-repeat paired ratio of every measurement of that shape) at the smallest batch size and
  prompt length; the dense model reads 1.00, recovered variants read their pruned shape's speed-up.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from prunebench.report.claims import Z, outcome, paired_nll_difference
from prunebench.report.headline import headline_rows
from prunebench.study.grid import DENSE

#: (model, method, target ratio, recovery, data set, window) -> per-window mean NLLs (nats)
Windows = Mapping[tuple[str, str, float, str, str, int], list[float]]
SETTING = ["model", "target_ratio", "recovery"]
COLUMNS = [
    "model",
    "target_ratio",
    "recovery",
    "method",
    "method_label",
    "ppl_dataset",
    "ppl_seqlen",
    "ppl",
    "ppl_low",
    "ppl_high",
    "ppl_rank",
    "accuracy_metric",
    "accuracy",
    "accuracy_se",
    "accuracy_rank",
    "speed_batch_size",
    "speed_prompt_length",
    "decode_speedup",
    "decode_p10",
    "decode_p90",
    "prefill_speedup",
    "prefill_p10",
    "prefill_p90",
    "shape_measurements",
]
#: The measured speed-up columns of :func:`shape_speedups`; an engine other than eager adds them to the
#: findings and the summary with its name in front (``compiled_decode_speedup``), when it was measured.
MEASURED_SPEEDUPS = [f"{p}_{s}" for p in ("decode", "prefill") for s in ("speedup", "p10", "p90")]
ENGINES = ("eager", "compiled")


def ranks(names: list[str], better: dict[tuple[str, str], bool]) -> dict[str, int]:
    """``1 +`` how many others are better than each name beyond the uncertainty (``better[(a, b)]``:
    ``a`` beats ``b``); equal ranks are ties."""
    return {b: 1 + sum(better.get((a, b), False) for a in names if a != b) for b in names}


def _ppl_better(windows: dict[str, list[float] | None]) -> dict[tuple[str, str], bool]:
    out = {}
    for a, wa in windows.items():
        for b, wb in windows.items():
            if a != b and wa is not None and wb is not None and len(wa) == len(wb):
                mean, se = paired_nll_difference({"window_nll": wa}, {"window_nll": wb})
                out[(a, b)] = outcome(mean, se) == "better"
    return out


def _accuracy_better(acc: dict[str, tuple[float, float]]) -> dict[tuple[str, str], bool]:
    out = {}
    for a, (va, sa) in acc.items():
        for b, (vb, sb) in acc.items():
            if a != b:
                se = math.hypot(sa, sb)
                out[(a, b)] = bool(np.isfinite(se) and va - vb > Z * se)
    return out


def mean_accuracy(results: pd.DataFrame, headline: str) -> pd.DataFrame:
    """Per variant: the mean headline accuracy over every task (:func:`headline_rows`), its standard error
    and the task count."""
    zs = headline_rows(results, headline)
    keys = ["model", "method", "method_label", "target_ratio", "recovery"]
    grouped = zs.groupby(keys, sort=False)
    out = grouped["value"].mean().rename("accuracy").to_frame()
    out["accuracy_se"] = grouped["stderr"].apply(
        lambda se: math.sqrt((se.astype(float) ** 2).sum()) / len(se) if se.notna().all() else math.nan
    )
    out["tasks"] = grouped.size()
    return out.reset_index()


def shape_speedups(results: pd.DataFrame, engine: str = "eager") -> pd.DataFrame:
    """Per model x method x target ratio: the pooled speed-ups of ``engine`` at the smallest batch size
    and prompt length (``decode_speedup``, ``decode_p10`` ...); the dense model 1.00 with no spread.
    Every cell's figures are in the results table and the latency-per-setting plot."""
    speed = results[(results["kind"] == "speedup") & (results["engine"].fillna("eager") == engine)]
    columns = ["model", "method", "target_ratio", "speed_batch_size", "speed_prompt_length"]
    columns += [f"{p}_{s}" for p in ("decode", "prefill") for s in ("speedup", "p10", "p90")]
    columns += ["ideal_decode_flops", "ideal_prefill_flops", "shape_measurements"]
    rows = []
    for model, part in speed.groupby("model", sort=False):
        cell = part[["batch_size", "prompt_length"]].astype(float).min()
        here = part[
            (part["batch_size"] == cell["batch_size"]) & (part["prompt_length"] == cell["prompt_length"])
        ]
        for (method, ratio), variant in here.groupby(["method", "target_ratio"], sort=False):
            row = {
                "model": model,
                "method": method,
                "target_ratio": ratio,
                "speed_batch_size": int(cell["batch_size"]),
                "speed_prompt_length": int(cell["prompt_length"]),
            }
            for ideal in ("ideal_decode_flops", "ideal_prefill_flops"):
                values = variant.loc[variant["metric"] == ideal, "value"]
                if not values.empty:
                    row[ideal] = values.iloc[0]
            for phase in ("decode", "prefill"):
                pooled = variant[variant["metric"] == f"pooled_{phase}"]
                if not pooled.empty:
                    first = pooled.iloc[0]
                    row |= {
                        f"{phase}_speedup": first["value"],
                        f"{phase}_p10": first["p10"],
                        f"{phase}_p90": first["p90"],
                        "shape_measurements": first["n"],
                    }
            rows.append(row)
        dense = {
            "model": model,
            "method": DENSE,
            "target_ratio": 0.0,
            "decode_speedup": 1.0,
            "prefill_speedup": 1.0,
            "ideal_decode_flops": 1.0,
            "ideal_prefill_flops": 1.0,
            "speed_batch_size": int(cell["batch_size"]),
            "speed_prompt_length": int(cell["prompt_length"]),
        }
        rows.append(dense)
    return pd.DataFrame(rows, columns=columns)


def measured_engines(results: pd.DataFrame) -> list[str]:
    """The latency engines the study measured speed-ups with, eager first."""
    present = set(results.loc[results["kind"] == "speedup", "engine"].fillna("eager"))
    return [e for e in ENGINES if e in present]


def engine_speedups(results: pd.DataFrame) -> pd.DataFrame:
    """:func:`shape_speedups` of the eager engine, with every other measured engine's
    :data:`MEASURED_SPEEDUPS` beside it under its name (``compiled_decode_speedup``, ...); keyed by
    model, method and target ratio."""
    keys = ["model", "method", "target_ratio"]
    table = shape_speedups(results).drop_duplicates(keys)
    for engine in measured_engines(results):
        if engine != "eager":
            other = shape_speedups(results, engine).drop_duplicates(keys)[[*keys, *MEASURED_SPEEDUPS]]
            other = other.rename(columns={c: f"{engine}_{c}" for c in MEASURED_SPEEDUPS})
            table = table.merge(other, on=keys, how="outer")
    return table


def findings(
    results: pd.DataFrame, windows: Windows, ppl: tuple[str, int] | None, headline: str
) -> pd.DataFrame:
    """One row per model x target ratio x recovery x method (and the dense model once per model and
    recovery setting, unranked): headline perplexity with its interval and rank, mean headline
    accuracy with its standard error and rank, and the measured speed-ups (columns ``COLUMNS``)."""
    keys = ["model", "method", "method_label", "target_ratio", "recovery"]
    variants = results[keys].drop_duplicates()
    frame = variants.merge(mean_accuracy(results, headline), on=keys, how="left")
    if ppl is not None:
        dataset, seqlen = ppl
        rows = results[(results["kind"] == "ppl") & (results["dataset"] == dataset)]
        rows = rows[rows["seqlen"].astype(float) == seqlen][[*keys, "value", "stderr"]]
        frame = frame.merge(rows.rename(columns={"value": "ppl", "stderr": "ppl_se"}), on=keys, how="left")
        # stderr is ppl * nll_se (delta method): the interval over windows is ppl * exp(±Z nll_se).
        nll_se = frame["ppl_se"] / frame["ppl"]
        frame["ppl_low"], frame["ppl_high"] = (
            frame["ppl"] * np.exp(-Z * nll_se),
            frame["ppl"] * np.exp(Z * nll_se),
        )
        frame["ppl_dataset"], frame["ppl_seqlen"] = dataset, seqlen
    frame = frame.merge(engine_speedups(results), on=["model", "method", "target_ratio"], how="left")
    frame["accuracy_metric"] = headline
    out = []
    for (model, ratio, recovery), group in frame[frame["method"] != DENSE].groupby(SETTING, sort=False):
        group = group.copy()
        names = list(group["method"])
        if ppl is not None:
            nll = {m: windows.get((model, m, ratio, recovery, *ppl)) for m in names}
            group["ppl_rank"] = group["method"].map(ranks(names, _ppl_better(nll)))
        acc = {
            r.method: (r.accuracy, r.accuracy_se if pd.notna(r.accuracy_se) else math.inf)
            for r in group.itertuples()
            if pd.notna(r.accuracy)
        }
        if acc:
            group["accuracy_rank"] = group["method"].map(ranks(list(acc), _accuracy_better(acc)))
        dense = frame[(frame["model"] == model) & (frame["method"] == DENSE)].assign(
            target_ratio=ratio, recovery=recovery
        )
        order = [c for c in ("ppl_rank", "ppl", "accuracy_rank", "method") if c in group]
        out += [dense, group.sort_values(order)]
    table = pd.concat(out, ignore_index=True) if out else frame.iloc[0:0]
    extra = [c for c in table.columns if c.startswith(tuple(f"{e}_" for e in ENGINES[1:]))]
    for column in COLUMNS:
        if column not in table:
            table[column] = np.nan
    return table[COLUMNS + extra]
