"""The study's tidy results table (one row per variant x metric) and its per-variant summary."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prunebench.errors import PrunebenchError
from prunebench.models.checkpoint import load_skeleton
from prunebench.models.counting import decoder_params, total_params
from prunebench.report.findings import (
    MEASURED_SPEEDUPS,
    engine_speedups,
    findings,
    mean_accuracy,
    measured_engines,
)
from prunebench.report.headline import headline_column
from prunebench.study.grid import DENSE, Variant, variants

COLUMNS = [
    "model", "method", "method_label", "target_ratio", "recovery",
    "achieved_decoder_ratio", "achieved_total_ratio", "attention_removed", "mlp_removed",
    "decoder_params", "total_params",
    "kind", "dataset", "seqlen", "task", "metric", "batch_size", "prompt_length", "engine",
    "value", "stderr", "p10", "p90", "n", "shape", "device", "dtype", "versions",
]  # fmt: skip
#: Summary columns of :func:`prunebench.report.findings.shape_speedups`' columns.
SUMMARY_SPEED_COLUMNS = {
    "speed_batch_size": "speedup_batch_size",
    "speed_prompt_length": "speedup_prompt_length",
    "decode_speedup": "speedup_decode",
    "decode_p10": "speedup_decode_p10",
    "decode_p90": "speedup_decode_p90",
    "prefill_speedup": "speedup_prefill",
    "prefill_p10": "speedup_prefill_p10",
    "prefill_p90": "speedup_prefill_p90",
    "ideal_decode_flops": "speedup_ideal_decode_flops",
    "ideal_prefill_flops": "speedup_ideal_prefill_flops",
    "shape_measurements": "speedup_shapes_pooled",
}
#: Speed-up metrics measured side by side with the dense model, and their pooled form per plan shape.
POOLED = {"measured_prefill": "pooled_prefill", "measured_decode": "pooled_decode"}


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


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _plan(variant: Variant) -> dict[str, Any] | None:
    shape = Variant(variant.model, variant.method, variant.ratio, "none", variant.root)
    return _read_json(Path(shape.directory) / "model" / "plan.json")


def plan_shape(plan: dict[str, Any] | None) -> str:
    """A short name of the pruned model's shape (per layer: KV heads and MLP channels kept, and whether
    biases were added): two plans with the same shape run the same computation, so their latency is one
    quantity measured twice. ``dense`` for no plan."""
    if plan is None:
        return DENSE
    layers = sorted(
        (
            int(k),
            len(v["kv_heads"]) if "kv_heads" in v else -1,
            len(v["mlp_channels"]) if "mlp_channels" in v else -1,
        )
        for k, v in plan["layers"].items()
    )
    text = json.dumps([layers, plan.get("compensation") is not None])
    return hashlib.sha1(text.encode()).hexdigest()[:10]


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
    row["shape"] = plan_shape(plan)
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
        ok = m["status"] == "ok"
        for metric in LATENCY_METRICS:
            spread = _LATENCY_SPREAD.get(metric)
            p10, p90 = (m.get(spread[0]), m.get(spread[1])) if ok and spread else (None, None)
            rows.append(
                {"kind": "latency", "metric": metric, "value": m.get(metric) if ok else None, "p10": p10,
                 "p90": p90, "n": m.get("repeats"), **cell}
            )  # fmt: skip
    for s in result.get("speedups", []):
        cell = {"batch_size": s["batch_size"], "prompt_length": s["prompt_length"],
                "engine": s.get("engine", "eager"), "versions": versions}  # fmt: skip
        for metric in SPEEDUP_METRICS:
            if metric in s:
                # a measured speed-up carries the p10 / p90 of its per-round paired ratios
                p10, p90 = s.get(f"{metric}_paired_p10"), s.get(f"{metric}_paired_p90")
                rows.append(
                    {"kind": "speedup", "metric": metric, "value": s[metric], "p10": p10, "p90": p90, **cell}
                )
    return rows


#: A latency metric's p10 and p90 keys in latency.json.
_LATENCY_SPREAD = {
    "prefill_median_s": ("prefill_p10_s", "prefill_p90_s"),
    "decode_median_s_per_token": ("decode_p10_s_per_token", "decode_p90_s_per_token"),
}


def paired_speedups(latency: dict[str, Any]) -> dict[tuple[str, str, int, int], list[float]]:
    """Per-repeat speed-ups (dense time / pruned time, the two timed in the same round) of a latency
    result: ``{(measured_prefill | measured_decode, engine, batch size, prompt length): [ratio, ...]}``."""
    by_cell: dict[tuple[str, int, int], dict[str, dict]] = {}
    for m in latency.get("measurements", []):
        if m["status"] == "ok":
            cell = (m.get("engine", "eager"), m["batch_size"], m["prompt_length"])
            by_cell.setdefault(cell, {})[m["model"]] = m
    out = {}
    for cell, pair in by_cell.items():
        if {"model", "base"} <= set(pair):
            for metric, raw in (
                ("measured_prefill", "prefill_raw_s"),
                ("measured_decode", "decode_raw_s_per_token"),
            ):
                base, model = pair["base"].get(raw), pair["model"].get(raw)
                if base and model and len(base) == len(model):
                    out[(metric, *cell)] = [b / m for b, m in zip(base, model, strict=True)]
    return out


def _pooled_rows(variant_latency: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[dict[str, Any]]:
    """Speed-ups pooled over every measurement of the same model, plan shape and engine: the median,
    p10 and p90 of all their per-repeat paired ratios, ``n`` = how many measurements were pooled. One
    row per pruned variant (recovery none), so that each variant reads its shape's pooled speed-up."""
    pools: dict[tuple, list[list[float]]] = {}
    for identity, result in variant_latency:
        for key, ratios in paired_speedups(result).items():
            pools.setdefault((identity["model"], identity["shape"], *key), []).append(ratios)
    rows = []
    for identity, result in variant_latency:
        for metric, engine, batch, prompt in paired_speedups(result):
            runs = pools[(identity["model"], identity["shape"], metric, engine, batch, prompt)]
            ratios = np.concatenate(runs)
            p10, median, p90 = np.percentile(ratios, [10, 50, 90])
            rows.append(
                identity | {"kind": "speedup", "metric": POOLED[metric], "value": float(median), "p10": p10,
                            "p90": p90, "n": len(runs), "batch_size": batch, "prompt_length": prompt,
                            "engine": engine}
            )  # fmt: skip
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
    """Cost of a variant from Snakemake's benchmark files: scoring, planning (a rule method), pruning,
    recovery, and evaluation (every evaluation job of the variant, summed; the dense model has only this)."""
    bench = Path(variant.root) / "benchmarks"
    files = {
        "score": [bench / "score" / variant.model / f"{variant.method}.tsv"],
        "plan": [bench / "plan" / variant.model / variant.method / f"r{variant.ratio}.tsv"],
        "prune": [bench / "prune" / variant.model / variant.method / f"r{variant.ratio}.tsv"],
        "evaluate": sorted(
            (
                bench / "evaluate" / variant.model / variant.method / f"r{variant.ratio}" / variant.recovery
            ).glob("*.tsv")
        ),
    }
    if variant.recovery != "none":
        recover = bench / "recover" / variant.model / variant.method / f"r{variant.ratio}"
        files["recover"] = [recover / f"{variant.recovery}.tsv"]
    rows = []
    for step, paths in files.items():
        measured = [m for m in map(_benchmark_seconds, paths) if m is not None]
        if measured:
            seconds, peak = sum(m[0] for m in measured), max(m[1] for m in measured)
            rows.append({"kind": "cost", "task": step, "metric": "seconds", "value": seconds})
            rows.append({"kind": "cost", "task": step, "metric": "peak_rss_mib", "value": peak})
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
    rows, latencies = [], []
    for variant in variants(config):
        identity = _identity(variant, config, dense[variant.model])
        directory = Path(variant.directory)
        for metric_row in (
            _ppl_rows(directory) + _zeroshot_rows(directory) + _latency_rows(directory) + _cost_rows(variant)
        ):
            _check_finite(metric_row, directory)
            rows.append(identity | metric_row)
        latency = _read_json(directory / "eval" / "latency.json")
        if latency is not None and variant.method != DENSE:
            latencies.append((identity, latency))
    rows += _pooled_rows(latencies)
    frame = pd.DataFrame(rows)
    for column in COLUMNS:
        if column not in frame:
            frame[column] = None
    return frame[COLUMNS]


def summary(results: pd.DataFrame, headline: str = "acc_norm") -> pd.DataFrame:
    """One row per model variant: size, where it was cut, perplexities, mean zero-shot accuracy with its
    standard error, speed-ups, cost.

    The mean accuracy covers every evaluated task (:func:`headline_rows`); the per-task values stay in
    the tidy table.

    ``attention_removed`` and ``mlp_removed`` are the fractions of the dense model's attention and MLP
    parameters removed, so a structural collapse (e.g. every layer losing a third of its attention) shows.
    Speed-ups (:func:`prunebench.report.findings.shape_speedups`) are those of the variant's plan shape,
    pooled over identical shapes, at the smallest batch size and prompt length: 1.00 for the dense model,
    and a recovered variant reads its pruned shape's.
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
    accuracy = mean_accuracy(results, headline)
    if not accuracy.empty:
        parts.append(
            accuracy.set_index(keys)[["accuracy", "accuracy_se"]].rename(
                columns={
                    "accuracy": headline_column(headline),
                    "accuracy_se": f"{headline_column(headline)}_se",
                }
            )
        )
    cost = results[(results["kind"] == "cost") & (results["metric"] == "seconds")]
    if not cost.empty:
        parts.append(
            cost.pivot_table(index=keys, columns="task", values="value", aggfunc="sum").add_prefix("seconds_")
        )
    table = pd.concat(parts, axis=1).reset_index()
    speed = engine_speedups(results)
    if not speed.empty:
        speed = speed.rename(columns=summary_speed_columns(measured_engines(results)))
        table = table.merge(speed, on=["model", "method", "target_ratio"], how="left")
    return table


def summary_speed_columns(engines: list[str]) -> dict[str, str]:
    """:data:`SUMMARY_SPEED_COLUMNS` and, for each engine but eager, its measured speed-ups
    (``compiled_decode_speedup`` -> ``speedup_decode_compiled``)."""
    names = dict(SUMMARY_SPEED_COLUMNS)
    for engine in engines:
        if engine != "eager":
            names |= {f"{engine}_{c}": f"{SUMMARY_SPEED_COLUMNS[c]}_{engine}" for c in MEASURED_SPEEDUPS}
    return names


def window_nlls(config: dict[str, Any]) -> dict[tuple[str, str, float, str, str, int], list[float]]:
    """Every perplexity result's per-window mean NLLs, keyed as :data:`prunebench.report.findings.Windows`."""
    out = {}
    for variant in variants(config):
        for path in sorted(Path(variant.directory).glob("eval/ppl_*.json")):
            result = json.loads(path.read_text())
            dataset = path.stem.removeprefix("ppl_").rsplit("_", 1)[0]
            key = (
                variant.model,
                variant.method,
                float(variant.ratio),
                variant.recovery,
                dataset,
                result["seqlen"],
            )
            out[key] = result.get("window_nll")
    return out


def write_tables(
    config: dict[str, Any],
    results_csv: str,
    results_parquet: str,
    summary_csv: str,
    findings_csv: str | None = None,
) -> pd.DataFrame:
    """Collect, then write the tidy table (CSV and Parquet), the summary and the findings (methods
    ranked per setting, :func:`prunebench.report.findings.findings`), each atomically."""
    frame = collect(config)
    headline = config["evaluation"]["zeroshot"]["headline"]
    outputs = [
        (results_csv, frame, "csv"),
        (results_parquet, frame, "parquet"),
        (summary_csv, summary(frame, headline), "csv"),
    ]
    if findings_csv is not None:
        ppl = config["evaluation"]["ppl"]
        headline_ppl = (next(iter(ppl["datasets"])), ppl["seqlens"][0]) if ppl["datasets"] else None
        outputs.append((findings_csv, findings(frame, window_nlls(config), headline_ppl, headline), "csv"))
    for path, data, writer in outputs:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        if writer == "csv":
            data.to_csv(tmp, index=False)
        else:
            data.astype(
                {"versions": "string", "dataset": "string", "task": "string", "shape": "string"}
            ).to_parquet(tmp, index=False)
        tmp.replace(target)
    return frame
