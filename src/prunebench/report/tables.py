"""The study's tidy results table (one row per variant x metric) and its per-variant summary."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from prunebench.errors import PrunebenchError
from prunebench.models.checkpoint import load_skeleton
from prunebench.models.counting import decoder_params, total_params
from prunebench.study.grid import DENSE, Variant, variants

COLUMNS = [
    "model", "method", "method_label", "target_ratio", "recovery",
    "achieved_decoder_ratio", "achieved_total_ratio", "attention_removed", "mlp_removed",
    "decoder_params", "total_params",
    "kind", "dataset", "seqlen", "task", "metric", "batch_size", "prompt_length", "engine",
    "value", "stderr", "n", "device", "dtype", "versions",
]  # fmt: skip


# Per measured cell of the pruned model: times (median, p10, p90), compile time, roofline fractions.
LATENCY_METRICS = (
    "prefill_tokens_per_s",
    "decode_tokens_per_s",
    "prefill_median_s",
    "prefill_p10_s",
    "prefill_p90_s",
    "decode_median_s_per_token",
    "decode_p10_s_per_token",
    "decode_p90_s_per_token",
    "compile_s",
    "prefill_fraction_of_peak_flops",
    "decode_fraction_of_peak_bandwidth",
)
# Per cell: measured speed-up over the dense model (ratio of medians, paired p10/p90) and the ideal ones.
SPEEDUP_METRICS = (
    "measured_prefill",
    "measured_decode",
    "measured_prefill_paired_p10",
    "measured_prefill_paired_p90",
    "measured_decode_paired_p10",
    "measured_decode_paired_p90",
    "ideal_prefill",
    "ideal_decode",
    "ideal_prefill_flops",
    "ideal_decode_flops",
    "ideal_decode_bytes",
    "ideal_weight_bytes",
)

# The speed-up columns of the summary (median over cells; the per-cell figures are in the results table).
SUMMARY_SPEEDUPS = (
    "measured_prefill",
    "measured_decode",
    "ideal_prefill",
    "ideal_decode",
    "ideal_prefill_flops",
    "ideal_decode_flops",
    "ideal_weight_bytes",
)


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _plan(variant: Variant) -> dict[str, Any] | None:
    return _read_json(Path(f"results/{variant.model}/{variant.method}/r{variant.ratio}/none/model/plan.json"))


def _dense_counts(path: str) -> dict[str, int]:
    skeleton = load_skeleton(path)
    return {"decoder": decoder_params(skeleton), "total": total_params(skeleton)}


def _identity(variant: Variant, config: dict[str, Any], dense: dict[str, int]) -> dict[str, Any]:
    spec = config["models"][variant.model]
    label = config["methods"].get(variant.method, {}).get("label", variant.method)
    row = {
        "model": variant.model,
        "method": variant.method,
        "method_label": label,
        "target_ratio": float(variant.ratio),
        "recovery": variant.recovery,
        "device": spec["device"],
        "dtype": spec["dtype"],
    }
    plan = _plan(variant) if variant.method != DENSE else None
    if plan is not None:
        achieved = plan["achieved"]
        row.update(
            achieved_decoder_ratio=achieved["decoder_ratio"],
            achieved_total_ratio=achieved["total_ratio"],
            attention_removed=achieved.get("attention_removed"),
            mlp_removed=achieved.get("mlp_removed"),
            decoder_params=achieved["decoder_params"],
            total_params=achieved["total_params"],
        )
    else:
        row.update(
            achieved_decoder_ratio=0.0,
            achieved_total_ratio=0.0,
            attention_removed=0.0,
            mlp_removed=0.0,
            decoder_params=dense["decoder"],
            total_params=dense["total"],
        )
    return row


def _ppl_rows(directory: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(directory.glob("eval/ppl_*.json")):
        result = json.loads(path.read_text())
        dataset = path.stem.removeprefix("ppl_").rsplit("_", 1)[0]
        se = result.get("nll_se")  # of the mean NLL over windows; the delta method gives ppl's
        rows.append(
            {"kind": "ppl", "dataset": dataset, "seqlen": result["seqlen"], "metric": "ppl",
             "value": result["ppl"], "stderr": None if se is None else result["ppl"] * se,
             "n": result["tokens"], "batch_size": result.get("batch_size")}
        )  # fmt: skip
    return rows


def _zeroshot_rows(directory: Path) -> list[dict[str, Any]]:
    result = _read_json(directory / "eval" / "zeroshot.json")
    if result is None:
        return []
    protocol = result.get("protocol", {})
    versions = {"lm_eval": protocol.get("lm_eval_version")}
    return [
        {"kind": "zeroshot", "task": r["task"], "metric": r["metric"], "value": r["value"], "stderr": r["stderr"],
         "n": r["n"], "batch_size": protocol.get("batch_size"), "versions": json.dumps(versions)}
        for r in result["rows"]
        if r["metric"] in ("acc", "acc_norm")
    ]  # fmt: skip


def _latency_rows(directory: Path) -> list[dict[str, Any]]:
    result = _read_json(directory / "eval" / "latency.json")
    if result is None:
        return []
    env = result.get("environment", {})
    versions = json.dumps({k: env.get(k) for k in ("torch", "transformers", "prunebench")})
    rows = []
    for m in result.get("measurements", []):
        if m.get("model") != "model":
            continue
        cell = {"batch_size": m["batch_size"], "prompt_length": m["prompt_length"],
                "engine": m.get("engine", "eager"), "versions": versions}  # fmt: skip
        for metric in LATENCY_METRICS:
            value = m.get(metric) if m["status"] == "ok" else None
            rows.append({"kind": "latency", "metric": metric, "value": value, "n": m.get("repeats"), **cell})
    for s in result.get("speedups", []):
        cell = {"batch_size": s["batch_size"], "prompt_length": s["prompt_length"],
                "engine": s.get("engine", "eager"), "versions": versions}  # fmt: skip
        for metric in SPEEDUP_METRICS:
            if metric in s:
                rows.append({"kind": "speedup", "metric": metric, "value": s[metric], **cell})
    return rows


def _benchmark_seconds(path: Path) -> tuple[float, float] | None:
    """(wall seconds, peak RSS MiB) from a Snakemake ``benchmark:`` file."""
    if not path.is_file():
        return None
    with path.open() as fh:
        row = next(csv.DictReader(fh, delimiter="\t"), None)
    if row is None:
        return None
    return float(row["s"]), float(row["max_rss"]) if row.get("max_rss") not in (
        None,
        "",
        "-",
        "NA",
    ) else float("nan")


def _cost_rows(variant: Variant) -> list[dict[str, Any]]:
    """Scoring, pruning and recovery cost (Snakemake benchmark files) of a pruned variant."""
    if variant.method == DENSE:
        return []
    bench = Path("results/benchmarks")
    files = {
        "score": bench / "score" / variant.model / f"{variant.method}.tsv",
        "prune": bench / "prune" / variant.model / variant.method / f"r{variant.ratio}.tsv",
    }
    if variant.recovery != "none":
        files["recover"] = (
            bench
            / "recover"
            / variant.model
            / variant.method
            / f"r{variant.ratio}"
            / f"{variant.recovery}.tsv"
        )
    rows = []
    for step, path in files.items():
        measured = _benchmark_seconds(path)
        if measured is not None:
            rows.append({"kind": "cost", "task": step, "metric": "seconds", "value": measured[0]})
            rows.append({"kind": "cost", "task": step, "metric": "peak_rss_mib", "value": measured[1]})
    return rows


def _check_finite(row: dict[str, Any], directory: Path) -> None:
    """A model's metric (perplexity, accuracy) that is NaN or inf is an error, never a row."""
    if row["kind"] in ("ppl", "zeroshot") and not math.isfinite(row["value"]):
        raise PrunebenchError(
            f"{directory}/eval: {row['kind']} {row['metric']} is {row['value']}; a metric must be finite"
        )


def collect(config: dict[str, Any]) -> pd.DataFrame:
    """Every result file of the study as one tidy frame (columns: ``COLUMNS``)."""
    dense = {name: _dense_counts(spec["path"]) for name, spec in config["models"].items()}
    rows = []
    for variant in variants(config):
        identity = _identity(variant, config, dense[variant.model])
        directory = Path(variant.directory)
        for metric_row in (
            _ppl_rows(directory) + _zeroshot_rows(directory) + _latency_rows(directory) + _cost_rows(variant)
        ):
            _check_finite(metric_row, directory)
            rows.append(identity | metric_row)
    frame = pd.DataFrame(rows)
    for column in COLUMNS:
        if column not in frame:
            frame[column] = None
    return frame[COLUMNS]


def summary(results: pd.DataFrame, headline: str = "acc_norm") -> pd.DataFrame:
    """One row per model variant: size, where it was cut, perplexities, mean zero-shot accuracy, speed-ups, cost.

    ``attention_removed`` and ``mlp_removed`` are the fractions of the dense model's attention and MLP
    parameters removed, so a structural collapse (e.g. every layer losing a third of its attention) shows.
    """
    keys = ["model", "method", "method_label", "target_ratio", "recovery"]
    first = results.groupby(keys, sort=False, dropna=False)[
        ["achieved_decoder_ratio", "achieved_total_ratio", "attention_removed", "mlp_removed", "total_params"]
    ].first()
    parts = [first]
    ppl = results[results["kind"] == "ppl"]
    if not ppl.empty:
        ppl = ppl.assign(
            column="ppl_" + ppl["dataset"].astype(str) + "_" + ppl["seqlen"].astype(int).astype(str)
        )
        parts.append(ppl.pivot_table(index=keys, columns="column", values="value", aggfunc="first"))
    zs = results[(results["kind"] == "zeroshot") & (results["metric"] == headline)]
    if not zs.empty:
        parts.append(zs.groupby(keys)["value"].mean().rename(f"mean_{headline}").to_frame())
    speed = results[(results["kind"] == "speedup") & results["metric"].isin(SUMMARY_SPEEDUPS)]
    if not speed.empty:
        # eager keeps the plain column names; other engines get their name in the column
        engine = speed["engine"].fillna("eager")
        prefix = "speedup_" + engine.where(engine != "eager", "").map(lambda e: f"{e}_" if e else "")
        speed = speed.assign(column=prefix + speed["metric"])
        parts.append(speed.pivot_table(index=keys, columns="column", values="value", aggfunc="median"))
    cost = results[(results["kind"] == "cost") & (results["metric"] == "seconds")]
    if not cost.empty:
        parts.append(
            cost.pivot_table(index=keys, columns="task", values="value", aggfunc="sum").add_prefix("seconds_")
        )
    return pd.concat(parts, axis=1).reset_index()


def write_tables(
    config: dict[str, Any], results_csv: str, results_parquet: str, summary_csv: str
) -> pd.DataFrame:
    """Collect, then write the tidy table (CSV and Parquet) and the summary, each atomically."""
    frame = collect(config)
    headline = config["evaluation"]["zeroshot"]["headline"]
    for path, data, writer in (
        (results_csv, frame, "csv"),
        (results_parquet, frame, "parquet"),
        (summary_csv, summary(frame, headline), "csv"),
    ):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        if writer == "csv":
            data.to_csv(tmp, index=False)
        else:
            data.astype({"versions": "string", "dataset": "string", "task": "string"}).to_parquet(
                tmp, index=False
            )
        tmp.replace(target)
    return frame
