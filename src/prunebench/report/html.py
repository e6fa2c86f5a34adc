"""The self-contained HTML report: summary table, plots embedded, protocol and provenance."""

from __future__ import annotations

import base64
import inspect
import json
import math
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
import yaml

import prunebench
from prunebench.io import atomic_write_text
from prunebench.report.claims import Z
from prunebench.report.findings import ENGINES
from prunebench.report.headline import headline_column, headline_label, headline_rows
from prunebench.report.html_tables import Cell, number, percent, plus_minus, rank, table, text, with_interval
from prunebench.report.plots import CAPTIONS
from prunebench.report.published import published_html
from prunebench.report.tables import summary_speed_columns
from prunebench.study.grid import DENSE


def _versions() -> dict[str, str]:
    import lm_eval
    import peft
    import snakemake
    import torch
    import transformers

    return {
        "prunebench": prunebench.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "lm_eval": lm_eval.__version__,
        "snakemake": snakemake.__version__,
        "pandas": pd.__version__,
    }


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _method_descriptions(config: dict[str, Any]) -> list[dict[str, str]]:
    from prunebench.methods import available_methods

    registered = available_methods()
    out = []
    for name, spec in config["methods"].items():
        method = spec.get("method", name)
        if spec.get("kind", "library") == "library" and method in registered:
            doc = inspect.getdoc(registered[method]) or ""
            paragraphs = doc.split("\n\n")
            text = " ".join(p.replace("\n", " ") for p in paragraphs[:2])
            if method != name:
                text = f"{method} with {_options(spec.get('params', {}))}. {text}"
        else:
            text = f"Run as a rule (workflow/rules/methods/{name}.smk), applied through its plan.json."
        out.append({"name": spec.get("label", name), "text": text})
    return out


def _options(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "its defaults"


def _recovery_warnings(config: dict[str, Any]) -> list[str]:
    """Warnings that recovery wrote into its ``summary.json`` (data repeated over several epochs),
    one line per recovered variant that has any."""
    from prunebench.study import variants

    lines = []
    for variant in variants(config):
        path = Path(variant.directory) / "model" / "summary.json"
        if variant.recovery == "none" or not path.is_file():
            continue
        warnings = json.loads(path.read_text(encoding="utf-8")).get("warnings", [])
        lines += [f"{variant.directory}: {warning}" for warning in warnings]
    return lines


def _recovery_budgets(config: dict[str, Any]) -> list[str]:
    """One line per recovery variant: its budget in steps and tokens, and which models it recovers."""
    out = []
    for name, spec in config["recovery"].items():
        if name == "none":
            continue
        if "tokens" in spec:
            budget = f"{spec['tokens']:,} tokens"
        else:
            tokens = spec["steps"] * spec["batch_size"] * spec["seqlen"]
            budget = (
                f"{spec['steps']} steps × {spec['batch_size']} × {spec['seqlen']} tokens ({tokens:,} tokens)"
            )
        scope = ", ".join(
            f"{key} {', '.join(map(str, spec[key]))}" for key in ("methods", "ratios") if key in spec
        )
        extra = ", ".join(
            f"{k}={v}" for k, v in {"lr": spec.get("lr"), **spec.get("params", {})}.items() if v is not None
        )
        out.append(
            f"{name}: {budget} of {spec['data']}"
            + (f"; {extra}" if extra else "")
            + (f"; only {scope}" if scope else "")
        )
    return out


def _method_options(config: dict[str, Any]) -> list[str]:
    return [
        f"{name}: {_options(spec['params'])}"
        for name, spec in config["methods"].items()
        if spec.get("params")
    ]


def _revision(entry: dict[str, Any] | None) -> str:
    """``, revision main = commit 0123456789ab`` of a Hub entry of the preflight record; else ``""``."""
    if not entry or entry.get("kind") == "gguf file":  # an imported GGUF file says where it came from
        return ""
    if "revision" not in entry:
        return ", local"
    commit = entry.get("commit")
    return (
        f", revision {entry['revision']} = commit {commit}"
        if commit
        else f", revision {entry['revision']} (offline: commit not resolved)"
    )


def _model_sources(config: dict[str, Any], preflight: dict[str, Any]) -> list[str]:
    """Where each model came from (a Hub model with the commit read); an imported GGUF file with its
    package, hash and quantization."""
    out = []
    for name, spec in config["models"].items():
        provenance = Path(spec["path"]) / "provenance.json"
        text = f"{name}: {spec['path']}{_revision(preflight.get('models', {}).get(name))}"
        if "gguf" in spec and provenance.is_file():
            p = json.loads(provenance.read_text())
            package = p["source"]["package"]
            origin = f"{package['name']} {package['version']}, " if package else ""
            types = ", ".join(f"{t} ×{n}" for t, n in p["gguf"]["tensor_types"].items())
            text += (
                f", imported from {origin}{Path(p['source']['file']).name} (sha256 {p['source']['sha256'][:16]}…, "
                f"{types}; licence {p['license']}), dequantized to {p['dequantized_to']}"
            )
        out.append(text)
    return out


def _data_sources(preflight: dict[str, Any]) -> list[str]:
    """Each data set the study read: a Hub data set with its revision and commit, or a local text."""
    out = []
    for name, entry in preflight.get("data", {}).items():
        if entry.get("kind") == "hub data set":
            out.append(f"{name} ({', '.join(entry['splits'])}){_revision(entry)}")
        else:
            out.append(f"{name} (local)")
    return out


def _models_column(frame: pd.DataFrame) -> bool:
    """Whether tables need a model column (several models)."""
    return frame["model"].nunique() > 1


def _ratio(value: Any) -> Cell:
    return Cell("dense" if float(value) == 0 else f"{float(value):g}", float(value))


def _speedup_headers(prefix: str = "") -> list[tuple[str, str]]:
    return [
        (
            f"{prefix}decode ×",
            "decode speed-up over dense: median of the per-repeat paired ratios, pooled over "
            "identical plan shapes, (p10–p90); smallest batch size and prompt length",
        ),
        (f"{prefix}prefill ×", "prefill speed-up over dense, as decode"),
    ]


def _speedup_cells(row: dict[str, Any], prefix: str = "") -> list[Cell]:
    """Decode and prefill speed-ups with their p10-p90 of ``row``'s ``{prefix}decode_speedup`` ... columns."""
    return [
        with_interval(
            row.get(f"{prefix}{phase}_speedup"),
            row.get(f"{prefix}{phase}_p10"),
            row.get(f"{prefix}{phase}_p90"),
            suffix="×",
        )
        for phase in ("decode", "prefill")
    ]


def _other_engines(frame: pd.DataFrame, column: str) -> list[str]:
    """The engines besides eager whose decode speed-up ``column.format(engine)`` has a value in ``frame``."""
    return [e for e in ENGINES[1:] if column.format(e) in frame and frame[column.format(e)].notna().any()]


def _named(name: str, best: list[str]) -> str:
    if not best:
        return f"{name}: no data"
    ties = f" (tied within the uncertainty with {', '.join(best[1:])})" if len(best) > 1 else ""
    return f"{name}: {best[0]}{ties}"


def findings_sections(findings: pd.DataFrame) -> list[dict[str, Any]]:
    """Per model x ratio x recovery: a one-line answer and the ranked table (the report's findings)."""
    out = []
    for (model, ratio, recovery), group in findings.groupby(
        ["model", "target_ratio", "recovery"], sort=False
    ):
        pruned = group[group["method"] != DENSE]
        ppl_best = list(pruned[pruned["ppl_rank"] == 1].sort_values("ppl")["method_label"])
        acc_best = list(
            pruned[pruned["accuracy_rank"] == 1].sort_values("accuracy", ascending=False)["method_label"]
        )
        fastest = pruned.dropna(subset=["decode_speedup"]).sort_values("decode_speedup", ascending=False)
        answer = [_named("lowest perplexity", ppl_best), _named("highest accuracy", acc_best)]
        if not fastest.empty:
            top = fastest.iloc[0]
            # As claims.py's decode check: another is as fast when its p90 reaches the fastest's p10.
            close = fastest.iloc[1:][fastest.iloc[1:]["decode_p90"] >= top["decode_p10"]]
            ties = f"; within its p10–p90: {', '.join(close['method_label'])}" if not close.empty else ""
            answer.append(f"fastest decode: {top['method_label']} ({top['decode_speedup']:.2f}×{ties})")
        engines = _other_engines(group, "{}_decode_speedup")
        for engine in engines:
            best = pruned.dropna(subset=[f"{engine}_decode_speedup"])
            if not best.empty:
                top = best.loc[best[f"{engine}_decode_speedup"].idxmax()]
                answer.append(
                    f"fastest {engine} decode: {top['method_label']} ({top[f'{engine}_decode_speedup']:.2f}×)"
                )
        counts = {col: pruned[col].value_counts() for col in ("ppl_rank", "accuracy_rank")}
        rows = []
        for r in group.itertuples(index=False):
            pooled = (
                "" if pd.isna(r.shape_measurements) or r.method == DENSE else f"{int(r.shape_measurements)}"
            )
            rows.append(
                [
                    text(r.method_label),
                    rank(r.ppl_rank, counts["ppl_rank"].get(r.ppl_rank, 0) > 1),
                    with_interval(r.ppl, r.ppl_low, r.ppl_high),
                    rank(r.accuracy_rank, counts["accuracy_rank"].get(r.accuracy_rank, 0) > 1),
                    plus_minus(r.accuracy, Z * r.accuracy_se if pd.notna(r.accuracy_se) else None),
                    *_speedup_cells(r._asdict()),
                    *[c for e in engines for c in _speedup_cells(r._asdict(), f"{e}_")],
                    Cell(pooled, float(pooled) if pooled else ""),
                ]
            )
        first = group.iloc[0]
        headers = [
            ("method", "pruning method (dense: the unpruned model, not ranked)"),
            (
                "ppl rank",
                "1 + the number of methods with a lower perplexity beyond the paired 95% interval; =n: tied",
            ),
            (
                f"perplexity {first['ppl_dataset']}/{first['ppl_seqlen']:.0f}"
                if pd.notna(first["ppl_seqlen"])
                else "perplexity",
                "perplexity on the first data set at the first window length (tokens), 95% interval over windows",
            ),
            (
                "acc rank",
                "1 + the number of methods with a higher accuracy beyond the 95% interval of the "
                "difference; =n: tied",
            ),
            (
                f"mean {first['accuracy_metric']}",
                "mean zero-shot accuracy over tasks (0-1) ± 1.96 standard errors",
            ),
            *_speedup_headers("eager " if engines else ""),
            *[h for e in engines for h in _speedup_headers(f"{e} ")],
            ("shapes pooled", "how many measurements of this exact plan shape the speed-up pools"),
        ]
        title = f"{model} · ratio {float(ratio):g} · recovery {recovery}"
        out.append(
            {"title": title, "answer": "; ".join(answer) + ".", "table": table(headers, rows, "findings")}
        )
    return out


def summary_table(summary: pd.DataFrame, headline: str) -> str:
    """The summary: one row per variant, speed-ups first, human headers with units."""
    several = _models_column(summary)
    ppl_columns = [c for c in summary.columns if c.startswith("ppl_")]
    headers = [("model", "model")] if several else []
    headers += [
        ("method", "pruning method"),
        ("recovery", "recovery variant"),
        ("target", "requested fraction of decoder-layer parameters removed"),
    ]
    engines = _other_engines(summary, "speedup_decode_{}")
    headers += _speedup_headers("eager " if engines else "")
    headers += [h for e in engines for h in _speedup_headers(f"{e} ")]
    headers += [
        (
            f"ppl {c.removeprefix('ppl_').rsplit('_', 1)[0]}/{c.rsplit('_', 1)[1]}",
            f"perplexity on {c.removeprefix('ppl_').rsplit('_', 1)[0]}, windows of {c.rsplit('_', 1)[1]} tokens",
        )
        for c in ppl_columns
    ]
    acc = headline_column(headline)
    if acc in summary:
        headers.append((f"mean {headline}", "mean zero-shot accuracy over tasks (0-1) ± 1 standard error"))
    headers += [
        ("achieved %", "percent of decoder-layer parameters removed"),
        ("total %", "percent of all parameters removed"),
        ("attn. %", "percent of the dense model's attention parameters removed"),
        ("MLP %", "percent of the dense model's MLP parameters removed"),
        ("params (M)", "parameters after pruning, millions"),
        ("cost (s)", "wall-clock seconds of scoring, planning, pruning and recovery (Snakemake benchmarks)"),
    ]
    seconds = [c for c in summary.columns if c.startswith("seconds_") and c != "seconds_evaluate"]
    rows = []
    for row in summary.to_dict("records"):
        cells = [text(row["model"])] if several else []
        cells += [text(row["method_label"]), text(row["recovery"]), _ratio(row["target_ratio"])]
        columns = summary_speed_columns(["eager", *engines])
        short = {short: row.get(long) for short, long in columns.items()}
        cells += _speedup_cells(short)
        cells += [c for e in engines for c in _speedup_cells(short, f"{e}_")]
        cells += [number(row[c], 2) for c in ppl_columns]
        if acc in summary:
            cells.append(plus_minus(row[acc], row.get(f"{acc}_se")))
        cost = sum(row[c] for c in seconds if pd.notna(row[c])) if seconds else None
        params = row["total_params"] / 1e6 if pd.notna(row["total_params"]) else None
        cells += [
            percent(row["achieved_decoder_ratio"]),
            percent(row["achieved_total_ratio"]),
            percent(row["attention_removed"]),
            percent(row["mlp_removed"]),
            number(params, 2),
            number(cost if row["method"] != DENSE else None, 0),
        ]
        rows.append(cells)
    return table(headers, rows, "summary")


def _variant_cells(r: dict[str, Any], several: bool) -> list[Cell]:
    cells = [text(r["method_label"]), _ratio(r["target_ratio"]), text(r["recovery"])]
    return ([text(r["model"])] if several else []) + cells


def _variant_headers(several: bool) -> list[tuple[str, str]]:
    return ([("model", "model")] if several else []) + [
        ("method", "pruning method"),
        ("target", "requested fraction of decoder-layer parameters removed"),
        ("recovery", "recovery variant"),
    ]


def task_table(results: pd.DataFrame, headline: str) -> str:
    """Per-task accuracy (the headline metric where the task reports it, acc otherwise; ± 1 standard
    error) of every variant; chance in the header."""
    from prunebench.report.plots import chance_levels

    zs = headline_rows(results, headline)
    if zs.empty:
        return ""
    several = _models_column(zs)
    tasks = list(dict.fromkeys(zs["task"]))
    metric = zs.groupby("task")["metric"].first()
    chance = chance_levels()
    keys = ["model", "method", "method_label", "target_ratio", "recovery"]
    wide = zs.pivot_table(index=keys, columns="task", values=["value", "stderr"], aggfunc="first", sort=False)
    headers = _variant_headers(several) + [
        (
            f"{t} (chance {chance[t]:.2f})" if t in chance else t,
            f"{metric[t]} on {t} (0-1) ± 1 standard error",
        )
        for t in tasks
    ]
    rows = []
    for index, values in wide.iterrows():
        r = dict(zip(keys, index, strict=True))
        rows.append(
            _variant_cells(r, several)
            + [plus_minus(values.get(("value", t)), values.get(("stderr", t))) for t in tasks]
        )
    return table(headers, rows, "tasks")


def ppl_table(results: pd.DataFrame) -> str:
    """Perplexity per data set x window of every variant, with its 95% interval over windows."""
    ppl = results[results["kind"] == "ppl"]
    if ppl.empty:
        return ""
    several = _models_column(ppl)
    settings = list(dict.fromkeys(zip(ppl["dataset"], ppl["seqlen"].astype(int), strict=True)))
    keys = ["model", "method", "method_label", "target_ratio", "recovery"]
    headers = _variant_headers(several) + [
        (f"{d}/{s}", f"perplexity on {d}, windows of {s} tokens, 95% interval over windows")
        for d, s in settings
    ]
    rows = []
    for index, group in ppl.groupby(keys, sort=False):
        r = dict(zip(keys, index, strict=True))
        cells = _variant_cells(r, several)
        for d, s in settings:
            hit = group[(group["dataset"] == d) & (group["seqlen"].astype(int) == s)]
            if hit.empty:
                cells.append(Cell("", ""))
                continue
            value, se = float(hit["value"].iloc[0]), hit["stderr"].iloc[0]
            nll_se = float(se) / value if pd.notna(se) else None
            low, high = (
                (value * math.exp(-Z * nll_se), value * math.exp(Z * nll_se)) if nll_se else (None, None)
            )
            cells.append(with_interval(value, low, high))
        rows.append(cells)
    return table(headers, rows, "ppl")


def render_report(
    config: dict[str, Any],
    summary_csv: str,
    plots_dir: str,
    template: str,
    out: str,
    results_csv: str | None = None,
    findings_csv: str | None = None,
    preflight: str | None = None,
) -> None:
    """Render ``template`` (Jinja2) with everything the reader needs, images inlined, and write ``out``:
    the findings (methods ranked per setting), the summary, per-task accuracy, perplexity per data set and
    window, the plots, the papers' published numbers beside ours where a model has ``published_as``
    (``prunebench.report.published``), methods, protocol and provenance (with ``preflight``, the preflight
    record: the revision and commit of each Hub model and data set). Tables are sortable."""
    summary = pd.read_csv(summary_csv)
    opened = json.loads(Path(preflight).read_text()) if preflight and Path(preflight).is_file() else {}
    headline = config["evaluation"]["zeroshot"]["headline"]
    results = pd.read_csv(results_csv) if results_csv else None
    findings = pd.read_csv(findings_csv) if findings_csv else None
    plots = []
    for name, caption in CAPTIONS.items():
        png = Path(plots_dir) / f"{name}.png"
        if png.is_file():
            plots.append(
                {"name": name, "caption": caption, "data": base64.b64encode(png.read_bytes()).decode()}
            )
    env = jinja2.Environment(
        autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined
    )
    html = env.from_string(Path(template).read_text()).render(
        study=config.get("title") or config["study"],
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        summary_table=summary_table(summary, headline),
        findings=[] if findings is None or findings.empty else findings_sections(findings),
        task_table="" if results is None else task_table(results, headline),
        ppl_table="" if results is None else ppl_table(results),
        z=Z,
        plots=plots,
        methods=_method_descriptions(config),
        config_yaml=yaml.safe_dump(config, sort_keys=False),
        versions=_versions(),
        commit=_git_commit(),
        seed=config["seed"],
        devices=sorted({spec["device"] for spec in config["models"].values()}),
        ratios=config["ratios"],
        recoveries=list(config["recovery"]),
        recovery_budgets=_recovery_budgets(config),
        recovery_warnings=_recovery_warnings(config),
        method_options=_method_options(config),
        model_sources=_model_sources(config, opened),
        data_sources=_data_sources(opened),
        headline=headline_label(config["evaluation"]["zeroshot"]["headline"]),
        evaluation=config["evaluation"],
        calibration=config["calibration"],
        published=published_html(config, results_csv) if results_csv else "",
    )
    atomic_write_text(out, html)
