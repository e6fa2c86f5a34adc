"""The self-contained HTML report: summary table, plots embedded, protocol and provenance."""

from __future__ import annotations

import base64
import inspect
import json
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
from prunebench.report.plots import CAPTIONS
from prunebench.report.tables import headline_label

SUMMARY_LABELS = {
    "method_label": "method",
    "target_ratio": "target",
    "achieved_decoder_ratio": "achieved (decoder)",
    "achieved_total_ratio": "achieved (total)",
    "attention_removed": "attention removed",
    "mlp_removed": "MLP removed",
    "total_params": "params",
}


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
    if not entry or "revision" not in entry:
        return ", local" if entry else ""
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


def _summary_html(summary: pd.DataFrame) -> str:
    table = summary.drop(columns=["model", "method"] if summary["model"].nunique() == 1 else ["method"])
    table = table.rename(columns=SUMMARY_LABELS)
    if "params" in table:
        table["params"] = table["params"].map(lambda v: f"{v / 1e6:.2f} M" if pd.notna(v) else "")
    return table.to_html(
        index=False, float_format=lambda v: f"{v:.3f}", na_rep="", classes="summary", border=0
    )


def render_report(
    config: dict[str, Any],
    summary_csv: str,
    plots_dir: str,
    template: str,
    out: str,
    device: str | None = None,
    preflight: str | None = None,
) -> None:
    """Render ``template`` (Jinja2) with everything the reader needs, images inlined, and write ``out``.

    ``preflight``: the preflight record (results/preflight.json): the revision and commit of each Hub
    model and data set, listed under provenance."""
    summary = pd.read_csv(summary_csv)
    opened = json.loads(Path(preflight).read_text()) if preflight and Path(preflight).is_file() else {}
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
        study=config["study"],
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        summary_table=_summary_html(summary),
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
        method_options=_method_options(config),
        model_sources=_model_sources(config, opened),
        data_sources=_data_sources(opened),
        headline=headline_label(config["evaluation"]["zeroshot"]["headline"]),
        evaluation=config["evaluation"],
        calibration=config["calibration"],
    )
    atomic_write_text(out, html)
