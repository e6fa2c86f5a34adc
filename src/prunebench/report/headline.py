"""The headline zero-shot accuracy: which rows its mean averages, its column name and its label."""

from __future__ import annotations

import pandas as pd


def headline_column(headline: str) -> str:
    """The summary's mean-accuracy column: ``mean_acc``, or ``mean_acc_norm_or_acc`` (see :func:`headline_rows`)."""
    return "mean_acc" if headline == "acc" else f"mean_{headline}_or_acc"


def headline_label(headline: str, short: bool = False) -> str:
    """What the headline mean averages, in words: for the report, or ``short`` for a plot's axis."""
    if short:
        return "mean zero-shot acc" if headline == "acc" else f"mean zero-shot {headline} (else acc)"
    if headline == "acc":
        return "mean zero-shot accuracy over every task (acc)"
    return f"mean zero-shot accuracy over every task ({headline} where the task reports it, acc otherwise)"


def headline_rows(results: pd.DataFrame, headline: str) -> pd.DataFrame:
    """The zero-shot rows the headline mean averages: per variant and task, ``headline`` where the task
    reports it and ``acc`` otherwise (BoolQ and WinoGrande report only acc), so every evaluated task
    counts, as the papers average them. The rows keep their own ``metric``."""
    zs = results[(results["kind"] == "zeroshot") & results["metric"].isin(["acc", headline])]
    if zs.empty:
        return zs
    preferred = zs["metric"] == headline
    keys = ["model", "method", "target_ratio", "recovery", "task"]
    has_headline = preferred.groupby([zs[k] for k in keys], dropna=False).transform("any")
    return zs[preferred | ~has_headline]
