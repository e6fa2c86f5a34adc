"""The methods' papers' published numbers (``resources/published/*.csv``) beside a study's own.

Each CSV row is one number transcribed from a paper's table: ``paper, table, model, method, ratio,
recovery, metric, task, seqlen, protocol, value, source, note``.

- ``model`` is the paper's model name; a study's model matches it through ``published_as`` in the
  config (e.g. ``llama2-7b: {published_as: Llama-2-7B}``).
- ``method`` is our registry name (``dense`` for the unpruned model), ``recovery`` our recovery
  variant (``none``, ``lora``, ...), ``ratio`` the paper's pruning ratio as a fraction.
- ``metric`` is ``ppl`` (``task`` = data set, ``seqlen`` = window in tokens), ``acc`` or ``acc_norm``
  (``task`` = lm-eval task), or ``accuracy`` where the paper does not say which lm-eval metric; those
  are compared with the study's headline metric. ``task = mean`` is the table's average column.
- Accuracies are in percent, as the papers print them; perplexities as printed.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pandas as pd

from prunebench.errors import PrunebenchError

PUBLISHED_DIR = "resources/published"
COLUMNS = (
    "paper", "table", "model", "method", "ratio", "recovery", "metric", "task", "seqlen",
    "protocol", "value", "source", "note",
)  # fmt: skip
OPTIONAL = ("seqlen", "note")
ACCURACY_METRICS = ("acc", "acc_norm", "accuracy")
METRICS = ("ppl", *ACCURACY_METRICS)
MEAN = "mean"
# Papers state ratios of their own parameter counts (21.99 % of a model, say); a study's target ratio
# matches a published one when they differ by at most this much.
RATIO_TOLERANCE = 0.025


def _number(text: str, what: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise PrunebenchError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise PrunebenchError(f"{where}: {what} {text!r} is not finite")
    return value


def _check_row(row: dict[str, str], where: str) -> dict[str, Any]:
    for column in COLUMNS:
        if column not in OPTIONAL and not row[column].strip():
            raise PrunebenchError(f"{where}: {column} is empty")
    metric = row["metric"]
    if metric not in METRICS:
        raise PrunebenchError(f"{where}: metric {metric!r} is not one of {', '.join(METRICS)}")
    ratio = _number(row["ratio"], "ratio", where)
    if not 0 <= ratio < 1:
        raise PrunebenchError(f"{where}: ratio {ratio} is not a fraction in [0, 1)")
    value = _number(row["value"], "value", where)
    if metric == "ppl" and value < 1:
        raise PrunebenchError(f"{where}: perplexity {value} is below 1")
    if metric != "ppl" and not 0 <= value <= 100:
        raise PrunebenchError(f"{where}: accuracy {value} is not a percentage in [0, 100]")
    seqlen = row["seqlen"].strip()
    if metric == "ppl":
        if not seqlen.isdigit() or int(seqlen) <= 0:
            raise PrunebenchError(
                f"{where}: a perplexity needs its window, seqlen {seqlen!r} is not a positive integer"
            )
    elif seqlen:
        raise PrunebenchError(f"{where}: seqlen is only for perplexities, got {seqlen!r} for {metric}")
    return row | {"ratio": ratio, "value": value, "seqlen": int(seqlen) if seqlen else None}


def load_published(directory: str | Path = PUBLISHED_DIR) -> pd.DataFrame:
    """Every ``*.csv`` in ``directory`` as one frame (columns ``COLUMNS`` plus ``file``), validated.

    Raises ``PrunebenchError`` naming the file and line of the first malformed row (a missing column,
    an empty field, a metric we do not know, a ratio, value or window that is not a number in range).
    """
    rows = []
    for path in sorted(Path(directory).glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise PrunebenchError(f"{path}: missing column(s) {', '.join(missing)}")
            for row in reader:
                where = f"{path} line {reader.line_num}"
                if None in row or None in row.values():
                    raise PrunebenchError(f"{where}: expected {len(reader.fieldnames)} fields")
                rows.append(_check_row(row, where) | {"file": path.name})
    return pd.DataFrame(rows, columns=[*COLUMNS, "file"])


def _reproduced(
    results: pd.DataFrame, model: str, pub: pd.Series, headline: str
) -> tuple[float, str, float] | None:
    """The study's (value, metric, target ratio) for one published row; accuracies in percent."""
    near = results[
        (results["model"] == model)
        & (results["method"] == pub["method"])
        & (results["recovery"] == pub["recovery"])
        & ((results["target_ratio"] - pub["ratio"]).abs() <= RATIO_TOLERANCE)
    ]
    if pub["metric"] == "ppl":
        metric = "ppl"
        hits = near[
            (near["kind"] == "ppl") & (near["dataset"] == pub["task"]) & (near["seqlen"] == pub["seqlen"])
        ]
    else:
        metric = headline if pub["metric"] == "accuracy" else pub["metric"]
        hits = near[(near["kind"] == "zeroshot") & (near["task"] == pub["task"]) & (near["metric"] == metric)]
    if hits.empty:
        return None
    value = float(hits["value"].iloc[0]) * (1 if metric == "ppl" else 100)
    return value, metric, float(hits["target_ratio"].iloc[0])


def compare(
    published: pd.DataFrame, results: pd.DataFrame, published_as: dict[str, str], headline: str = "acc_norm"
) -> pd.DataFrame:
    """Published vs reproduced for every published row whose model, method, recovery and ratio the study has.

    ``results`` is the study's tidy table (``prunebench.report.tables.COLUMNS``); ``published_as`` maps
    a study model to the papers' name for it. A ``mean`` row is compared with the mean of the study's
    values for the same table row's tasks, only when the study has all of them. ``difference`` is
    reproduced − published, in the metric's unit (perplexity, or accuracy points).
    """
    out = []
    for model, name in published_as.items():
        rows = published[published["model"] == name]
        found: dict[int, tuple[float, str, float]] = {}
        for index, pub in rows[rows["task"] != MEAN].iterrows():
            hit = _reproduced(results, model, pub, headline)
            if hit is not None:
                found[index] = hit
        group = ["file", "table", "method", "ratio", "recovery", "note"]
        for index, pub in rows[rows["task"] == MEAN].iterrows():
            siblings = rows[
                (rows[group] == pub[group]).all(axis=1) & (rows["task"] != MEAN) & (rows["metric"] != "ppl")
            ]
            if len(siblings) and all(i in found for i in siblings.index):
                values = [found[i][0] for i in siblings.index]
                metrics = sorted({found[i][1] for i in siblings.index})
                found[index] = (sum(values) / len(values), "/".join(metrics), found[siblings.index[0]][2])
        for index, (value, metric, ratio) in sorted(found.items()):  # in the CSVs' order
            pub = published.loc[index]
            out.append(
                {"model": model, "paper": pub["paper"], "table": pub["table"], "method": pub["method"],
                 "recovery": pub["recovery"], "published_ratio": pub["ratio"], "our_ratio": ratio, "task": pub["task"],
                 "seqlen": pub["seqlen"], "published_metric": pub["metric"], "our_metric": metric,
                 "published": pub["value"], "reproduced": value, "difference": value - pub["value"],
                 "protocol": pub["protocol"], "note": pub["note"], "source": pub["source"]}
            )  # fmt: skip
    return pd.DataFrame(out)


def published_html(config: dict[str, Any], results_csv: str, directory: str | Path = PUBLISHED_DIR) -> str:
    """The report's "published vs reproduced" table as HTML, or ``""`` when no study model matches."""
    published_as = {m: s["published_as"] for m, s in config["models"].items() if s.get("published_as")}
    if not published_as:
        return ""
    table = compare(
        load_published(directory),
        pd.read_csv(results_csv),
        published_as,
        config["evaluation"]["zeroshot"]["headline"],
    )
    if table.empty:
        return ""
    table = table.drop(columns=["source"] if table["model"].nunique() > 1 else ["model", "source"])
    table = table.assign(
        seqlen=table["seqlen"].astype("Int64"),
        published_ratio=table["published_ratio"].map("{:.4g}".format),
        our_ratio=table["our_ratio"].map("{:.4g}".format),
    )
    return table.to_html(
        index=False, float_format=lambda v: f"{v:.2f}", na_rep="", border=0, classes="published"
    )
