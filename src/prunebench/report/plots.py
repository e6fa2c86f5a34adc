"""The study's plots (matplotlib, PNG and SVG), each drawn from the tidy results table.

Every plot is faceted by model (one row of panels per model; models are never joined in one line),
every method keeps one colour and marker (:mod:`prunebench.report.styles`), legends sit outside the
axes, and methods that land on the same point are spread sideways by a small fixed offset.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.lines
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import yaml

from prunebench.report.claims import Z
from prunebench.report.findings import mean_accuracy, shape_speedups
from prunebench.report.headline import headline_label, headline_rows
from prunebench.report.styles import DENSE_STYLE, MARKERS
from prunebench.study.grid import DENSE, ratio_tag, study_root

CHANCE_LEVELS = Path(__file__).resolve().parents[3] / "resources" / "tasks" / "chance.yaml"

CAPTIONS = {
    "ppl_vs_ratio": "Perplexity against the achieved fraction of decoder parameters removed: one row of panels "
    "per model, data set and window, one column per recovery variant; the dense model is the black star at 0. "
    "Bars: 95% interval over the evaluation windows (ppl · exp(±1.96 · standard error of the mean NLL)). "
    "Lower is better.",
    "accuracy_vs_ratio": "Mean zero-shot accuracy over the evaluated tasks against the achieved ratio: one row "
    "per model, one column per recovery variant. Bars: ±1.96 standard errors (lm-eval's per-task standard "
    "errors combined). Dashed: the dense model; dotted: chance (the mean of the tasks' chance levels).",
    "speedup_vs_ratio": "Measured decode and prefill speed-up over the dense model at the smallest batch size and "
    "prompt length, one row per model: the median of the per-repeat paired ratios (dense and pruned timed in "
    "the same round), pooled over every plan of the same shape; bars p10-p90. Hollow markers on dashed lines: "
    "the ideal speed-up from FLOPs.",
    "latency_per_setting": "Measured speed-up over the dense model per batch size x prompt length, one panel "
    "per setting (columns) and per model and phase (rows): filled markers measured side by side with the "
    "dense model (solid: eager engine, dashed: compiled engine), hollow markers the ideal speed-up of that "
    "cell from FLOPs and bytes (roofline with the device peaks measured in the same job).",
    "pareto": "Mean zero-shot accuracy against measured decode latency per token, one panel per model (filled: "
    "no recovery; hollow: recovered variants, which share the latency of their pruned shape); bars: accuracy "
    "±1.96 standard errors and latency p10-p90; the line joins the Pareto front (no other variant is both "
    "faster and more accurate).",
    "structure": "What each method removed at each ratio, for every model: the fraction of every layer's "
    "attention (KV groups) and MLP (channels) that is gone (colour bar: 0 kept, 1 removed).",
    "cost": "Cost of each method, one panel per model: scoring (once per model and method), planning and "
    "pruning (per ratio), recovery (per recovered variant) and evaluation (every variant), wall-clock "
    "seconds from Snakemake's benchmark files.",
}

#: Sideways spread of coinciding points, in units of the x axis's data range.
JITTER = 0.006


def _fallback_styles(results: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Styles for a table without a study config: methods in sorted order (tests, ad-hoc tables)."""
    cmap = plt.get_cmap("tab10")
    names = sorted(set(results["method"]) - {DENSE})
    styles = {m: {"color": cmap(i % 10), "marker": MARKERS[i % len(MARKERS)]} for i, m in enumerate(names)}
    return {**styles, DENSE: dict(DENSE_STYLE)}


def _models(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame["model"])) if "model" in frame else [""]


def _recoveries(frame: pd.DataFrame) -> list[str]:
    """Recovery variants present, ``none`` first, then in order of appearance."""
    found = list(dict.fromkeys(frame["recovery"]))
    return sorted(found, key=lambda r: (r != "none", found.index(r))) or ["none"]


def _pruned(results: pd.DataFrame) -> pd.DataFrame:
    return results[results["method"] != DENSE]


def _grid(
    rows: int, cols: int, width: float = 4.0, height: float = 3.2, **kw: Any
) -> tuple[plt.Figure, np.ndarray]:
    fig, axes = plt.subplots(
        rows, cols, figsize=(width * cols + 2.2, height * rows), squeeze=False, layout="constrained", **kw
    )
    return fig, axes


def _ratio_axis(ax: plt.Axes, span: float) -> None:
    """The achieved-ratio axis from 0 (the dense model) to just past the largest ratio, two decimals."""
    ax.set_xlim(-0.04 * span, 1.1 * span)
    ax.xaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:.2f}"))
    ax.set_xlabel("achieved decoder ratio")


def _offsets(methods: list[str]) -> dict[str, int]:
    """A fixed slot per method around 0 (…, -1, 0, 1, …), so coinciding points sit side by side."""
    return {m: i - (len(methods) - 1) / 2 for i, m in enumerate(methods)}


def _legend(fig: plt.Figure, styles: dict[str, dict[str, Any]], labels: dict[str, str], extra=()) -> None:
    """One legend for the figure, right of every panel: the methods shown, in style order."""
    handles = [
        matplotlib.lines.Line2D(
            [], [], linestyle="-", color=styles[m]["color"], marker=styles[m]["marker"], label=label
        )
        for m, label in labels.items()
    ]
    handles += list(extra)
    fig.legend(handles=handles, loc="outside right center", fontsize=8, frameon=False)


def _labels(frame: pd.DataFrame, styles: dict[str, dict[str, Any]]) -> dict[str, str]:
    """``{method: label}`` of the methods in ``frame``, in style order (dense first)."""
    present = dict(zip(frame["method"], frame["method_label"], strict=False))
    return {m: present[m] for m in styles if m in present}


def ppl_vs_ratio(results: pd.DataFrame, styles: dict[str, dict[str, Any]] | None = None) -> plt.Figure | None:
    ppl = results[results["kind"] == "ppl"]
    if ppl.empty:
        return None
    styles = styles or _fallback_styles(results)
    settings = list(dict.fromkeys(zip(ppl["dataset"], ppl["seqlen"].astype(int), strict=True)))
    rows = [(model, d, s) for model in _models(ppl) for d, s in settings]
    recoveries = _recoveries(_pruned(ppl))
    fig, axes = _grid(len(rows), len(recoveries), sharey="row")
    labels = _labels(ppl, styles)
    offsets = _offsets(list(labels))
    span = max(float(ppl["achieved_decoder_ratio"].max()), 0.05)
    for row_axes, (model, dataset, seqlen) in zip(axes, rows, strict=True):
        here = ppl[(ppl["dataset"] == dataset) & (ppl["seqlen"].astype(int) == seqlen)]
        if "model" in here:
            here = here[here["model"] == model]
        dense = here[here["method"] == DENSE]
        for ax, recovery in zip(row_axes, recoveries, strict=True):
            part = _pruned(here)[_pruned(here)["recovery"] == recovery]
            for method, group in part.groupby("method", sort=False):
                group = group.sort_values("achieved_decoder_ratio")
                xs = np.r_[0.0, group["achieved_decoder_ratio"]] + offsets[method] * JITTER * span
                ys = np.r_[dense["value"].iloc[0] if not dense.empty else np.nan, group["value"]]
                se = _nll_se(group)
                err = [ys[1:] * (1 - np.exp(-Z * se)), ys[1:] * (np.exp(Z * se) - 1)]
                ax.plot(xs, ys, color=styles[method]["color"], linewidth=1.2)
                ax.errorbar(xs[1:], ys[1:], yerr=err, linestyle="none", capsize=2, **styles[method])
            if not dense.empty:
                ax.plot([0.0], dense["value"].iloc[:1], linestyle="none", markersize=10, **DENSE_STYLE)
            ax.set_yscale("log")
            ax.set_title(f"{model + ' · ' if model else ''}recovery: {recovery}", fontsize=9)
            _ratio_axis(ax, span)
            ax.grid(alpha=0.3)
        _plain_log_labels(row_axes[0])
        row_axes[0].set_ylabel(f"perplexity ({dataset}, {seqlen} tokens)")
    _legend(fig, styles, labels)
    return fig


def _nll_se(rows: pd.DataFrame) -> np.ndarray:
    """Standard error of the mean NLL of perplexity rows (``stderr`` is ppl · nll_se); 0 where none."""
    if "stderr" not in rows:
        return np.zeros(len(rows))
    return (rows["stderr"].astype(float) / rows["value"].astype(float)).fillna(0.0).to_numpy()


def _plain_log_labels(ax: plt.Axes) -> None:
    """Plain numbers on a log axis (shared by the panels); minor ticks labelled only within a decade.

    Over several decades (a collapsed model next to the dense one) labelled minor ticks overlap.
    """
    low, high = ax.get_ylim()
    ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.6g}"))
    within_a_decade = high / low < 10
    minor = (
        matplotlib.ticker.StrMethodFormatter("{x:,.6g}")
        if within_a_decade
        else matplotlib.ticker.NullFormatter()
    )
    ax.yaxis.set_minor_formatter(minor)


def chance_levels(path: str | Path = CHANCE_LEVELS) -> dict[str, float]:
    """``{task: accuracy of guessing}`` (1 / number of choices) of the tasks we know."""
    return {task: float(entry["chance"]) for task, entry in yaml.safe_load(Path(path).read_text()).items()}


def chance(tasks: list[str]) -> float | None:
    """The mean chance accuracy of ``tasks`` (what a mean over them would read by guessing), if all known."""
    known = chance_levels()
    return float(np.mean([known[t] for t in tasks])) if tasks and all(t in known for t in tasks) else None


def accuracy_vs_ratio(
    results: pd.DataFrame, headline: str, styles: dict[str, dict[str, Any]] | None = None
) -> plt.Figure | None:
    zs = headline_rows(results, headline)
    if zs.empty:
        return None
    styles = styles or _fallback_styles(results)
    ratio = results.groupby(["model", "method", "target_ratio", "recovery"])["achieved_decoder_ratio"].first()
    mean = mean_accuracy(results, headline).join(ratio, on=["model", "method", "target_ratio", "recovery"])
    models, recoveries = _models(mean), _recoveries(_pruned(mean))
    fig, axes = _grid(len(models), len(recoveries), sharey="row")
    labels = _labels(mean, styles)
    offsets = _offsets(list(labels))
    span = max(float(mean["achieved_decoder_ratio"].max()), 0.05)
    level = chance(sorted(set(zs["task"])))
    for row_axes, model in zip(axes, models, strict=True):
        here = mean[mean["model"] == model]
        dense = here[here["method"] == DENSE]
        for ax, recovery in zip(row_axes, recoveries, strict=True):
            part = _pruned(here)[_pruned(here)["recovery"] == recovery]
            for method, group in part.groupby("method", sort=False):
                group = group.sort_values("achieved_decoder_ratio")
                xs = group["achieved_decoder_ratio"] + offsets[method] * JITTER * span
                ax.errorbar(
                    xs,
                    group["accuracy"],
                    yerr=Z * group["accuracy_se"].fillna(0),
                    capsize=2,
                    **styles[method],
                )
            if not dense.empty:
                ax.axhline(dense["accuracy"].iloc[0], color="black", linestyle="--", linewidth=1)
            if level is not None:
                ax.axhline(level, color="grey", linestyle=":", linewidth=1.2)
            ax.set_title(f"{model} · recovery: {recovery}", fontsize=9)
            _ratio_axis(ax, span)
            ax.grid(alpha=0.3)
        row_axes[0].set_ylabel(headline_label(headline, short=True))
    extra = [matplotlib.lines.Line2D([], [], color="black", linestyle="--", label="dense")]
    if level is not None:
        extra.append(
            matplotlib.lines.Line2D([], [], color="grey", linestyle=":", label=f"chance ({level:.2f})")
        )
    _legend(fig, styles, {m: lab for m, lab in labels.items() if m != DENSE}, extra)
    return fig


def speedup_vs_ratio(
    results: pd.DataFrame, styles: dict[str, dict[str, Any]] | None = None
) -> plt.Figure | None:
    speed = shape_speedups(results)
    speed = speed[speed["method"] != DENSE].dropna(subset=["decode_speedup", "prefill_speedup"], how="all")
    if speed.empty:
        return None
    styles = styles or _fallback_styles(results)
    ratio = results.groupby(["model", "method", "target_ratio"])["achieved_decoder_ratio"].first()
    label = results.groupby("method")["method_label"].first()
    speed = speed.join(ratio, on=["model", "method", "target_ratio"]).join(label, on="method")
    models = _models(speed)
    fig, axes = _grid(len(models), 2)
    labels = _labels(speed, styles)
    offsets = _offsets(list(labels))
    span = max(float(speed["achieved_decoder_ratio"].max()), 0.05)
    for row_axes, model in zip(axes, models, strict=True):
        here = speed[speed["model"] == model]
        cell = here.iloc[0]
        for ax, phase in zip(row_axes, ("decode", "prefill"), strict=True):
            for method, group in here.groupby("method", sort=False):
                group = group.sort_values("achieved_decoder_ratio")
                xs = group["achieved_decoder_ratio"] + offsets[method] * JITTER * span
                ys = group[f"{phase}_speedup"]
                err = [ys - group[f"{phase}_p10"].fillna(ys), group[f"{phase}_p90"].fillna(ys) - ys]
                ax.errorbar(xs, ys, yerr=err, capsize=2, **styles[method])
                ax.plot(
                    xs,
                    group[f"ideal_{phase}_flops"],
                    "--",
                    color=styles[method]["color"],
                    marker=styles[method]["marker"],
                    markerfacecolor="none",
                    linewidth=0.8,
                )
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set_title(
                f"{model} · {phase} (batch {int(cell['speed_batch_size'])}, "
                f"prompt {int(cell['speed_prompt_length'])})",
                fontsize=9,
            )
            _ratio_axis(ax, span)
            ax.grid(alpha=0.3)
        row_axes[0].set_ylabel("speed-up over dense (×)")
    extra = [
        matplotlib.lines.Line2D([], [], color="grey", marker="o", label="measured (p10-p90)"),
        matplotlib.lines.Line2D(
            [], [], color="grey", marker="o", linestyle="--", markerfacecolor="none", label="ideal (FLOPs)"
        ),
    ]
    _legend(fig, styles, labels, extra)
    return fig


ENGINE_LINES = {"eager": "-", "compiled": "--"}


def latency_per_setting(
    results: pd.DataFrame, styles: dict[str, dict[str, Any]] | None = None
) -> plt.Figure | None:
    """Small multiples: one panel per (batch size, prompt length) and per (model, phase); measured speed-up
    per engine and the cell's ideal speed-up against the achieved decoder ratio."""
    speed = _pruned(results[(results["kind"] == "speedup") & (results["recovery"] == "none")])
    if speed.empty:
        return None
    styles = styles or _fallback_styles(results)
    speed = speed.assign(engine=speed["engine"].fillna("eager"))
    settings = sorted(set(zip(speed["batch_size"], speed["prompt_length"], strict=True)))
    rows = [(model, phase) for model in dict.fromkeys(speed["model"]) for phase in ("decode", "prefill")]
    # one more column, without axes, holds the legend outside the panels
    fig, grid = plt.subplots(
        len(rows), len(settings) + 1, figsize=(3.2 * len(settings) + 2.6, 2.6 * len(rows)), squeeze=False,
        gridspec_kw={"width_ratios": [1] * len(settings) + [0.8]},
    )  # fmt: skip
    for ax in grid[:, -1]:
        ax.axis("off")
    axes = grid[:, :-1]
    for (model, phase), row_axes in zip(rows, axes, strict=True):
        for (batch, prompt), ax in zip(settings, row_axes, strict=True):
            cell = speed[
                (speed["model"] == model)
                & (speed["batch_size"] == batch)
                & (speed["prompt_length"] == prompt)
            ]
            for (method, label), group in cell.groupby(["method", "method_label"], sort=True):
                style = styles[method]
                ideal = (
                    group[group["metric"] == f"ideal_{phase}"]
                    .groupby("achieved_decoder_ratio")["value"]
                    .median()
                )
                ax.plot(ideal.index, ideal.values, ":", color=style["color"], marker=style["marker"],
                        markerfacecolor="none")  # fmt: skip
                for engine, part in group.groupby("engine", sort=True):
                    measured = part[part["metric"] == f"measured_{phase}"]
                    points = measured.groupby("achieved_decoder_ratio")["value"].median()
                    ax.plot(points.index, points.values, ENGINE_LINES.get(engine, "-."), color=style["color"],
                            marker=style["marker"], label=f"{label} ({engine})")  # fmt: skip
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set_title(f"{model} {phase}: batch {int(batch)}, prompt {int(prompt)}", fontsize=8)
            ax.grid(alpha=0.3)
        row_axes[0].set_ylabel("speed-up over dense")
    for ax in axes[-1]:
        ax.set_xlabel("achieved decoder ratio")
    handles, names = axes[0][0].get_legend_handles_labels()
    grid[0][-1].legend(handles, names, loc="upper left", fontsize=7, frameon=False)
    fig.suptitle(
        "filled: measured (solid: eager, dashed: compiled); hollow, dotted: ideal from FLOPs and bytes",
        fontsize=8,
    )
    return fig


def pareto(
    results: pd.DataFrame, headline: str, styles: dict[str, dict[str, Any]] | None = None
) -> plt.Figure | None:
    zs = headline_rows(results, headline)
    lat = results[(results["kind"] == "latency") & (results["metric"] == "decode_median_s_per_token")]
    if zs.empty or lat.empty:
        return None
    styles = styles or _fallback_styles(results)
    # Latency is measured once per pruned shape (recovery changes weights, not shapes): at the smallest cell.
    cell = lat[["batch_size", "prompt_length"]].astype(float).min()
    lat = lat[(lat["batch_size"] == cell["batch_size"]) & (lat["prompt_length"] == cell["prompt_length"])]
    shape = ["model", "method", "target_ratio"]
    latency = lat.groupby(shape)[["value", "p10", "p90"]].first().rename(columns={"value": "latency"})
    points = mean_accuracy(results, headline).join(latency, on=shape).dropna(subset=["latency", "accuracy"])
    models = _models(points)
    fig, axes = _grid(1, len(models), width=5.0, height=3.8)
    labels = _labels(points, styles)
    for ax, model in zip(axes[0], models, strict=True):
        here = points[points["model"] == model].sort_values("latency")
        for row in here.itertuples():
            style = styles[row.method]
            xerr = [[row.latency - row.p10], [row.p90 - row.latency]] if pd.notna(row.p10) else None
            ax.errorbar(
                row.latency * 1e3,
                row.accuracy,
                yerr=Z * (row.accuracy_se if pd.notna(row.accuracy_se) else 0),
                xerr=None if xerr is None else np.asarray(xerr) * 1e3,
                capsize=2,
                color=style["color"],
                marker=style["marker"],
                markerfacecolor=style["color"] if row.recovery == "none" else "none",
                markersize=9 if row.method == DENSE else 6,
            )
        front, best = [], -np.inf
        for row in here.itertuples():
            if row.accuracy > best:
                front.append(row)
                best = row.accuracy
        ax.plot([r.latency * 1e3 for r in front], [r.accuracy for r in front], color="black", linewidth=1)
        ax.set_title(
            f"{model} (batch {int(cell['batch_size'])}, prompt {int(cell['prompt_length'])})", fontsize=9
        )
        ax.set_xlabel("decode latency per token (ms, median)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(headline_label(headline, short=True))
    _legend(fig, styles, labels)
    return fig


def _removed_fractions(plan: dict[str, Any], num_layers: int, kv_heads: int, channels: int) -> np.ndarray:
    """Rows attention / MLP, one column per dense layer: fraction removed (1 = sublayer gone)."""
    grid = np.zeros((2, num_layers))
    for key, entry in plan["layers"].items():
        layer = int(key)
        if "kv_heads" in entry:
            grid[0, layer] = 1 - len(entry["kv_heads"]) / kv_heads
        if "mlp_channels" in entry:
            grid[1, layer] = 1 - len(entry["mlp_channels"]) / channels
    return grid


def structure(config: dict[str, Any], results_dir: Path | None = None) -> plt.Figure | None:
    """For every model and method: one heat-map row per ratio and sublayer (attention, MLP), a column per
    layer; the fraction removed, with a colour bar."""
    from prunebench.models import get_adapter
    from prunebench.models.checkpoint import load_skeleton

    results_dir = Path(study_root(config)) if results_dir is None else results_dir
    panels = []
    for model, spec in config["models"].items():
        if not (Path(spec["path"]) / "config.json").is_file():
            continue
        adapter = get_adapter(load_skeleton(spec["path"]))
        for method, entry in config["methods"].items():
            rows, labels = [], []
            for ratio in config["ratios"]:
                path = results_dir / model / method / f"r{ratio_tag(ratio)}" / "none" / "model" / "plan.json"
                if path.is_file():
                    plan = json.loads(path.read_text())
                    rows.append(
                        _removed_fractions(
                            plan, adapter.num_layers, adapter.num_kv_heads, adapter.intermediate_size
                        )
                    )
                    labels += [f"{ratio:g} attention", f"{ratio:g} MLP"]
            if rows:
                panels.append(
                    (f"{model} · {entry.get('label', method)}", np.vstack(rows), labels, adapter.num_layers)
                )
    if not panels:
        return None
    heights = [len(p[2]) for p in panels]
    layers = max(p[3] for p in panels)
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(max(7.0, 0.28 * layers + 3), 0.9 + 0.32 * sum(heights) + 0.45 * len(panels)),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
        layout="constrained",
    )
    image = None
    for ax, (title, grid, labels, num_layers) in zip(axes[:, 0], panels, strict=True):
        image = ax.imshow(grid, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        step = 1 if num_layers <= 32 else math.ceil(num_layers / 32)
        ax.set_xticks(range(0, num_layers, step))
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(title, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("decoder layer")
    bar = fig.colorbar(image, ax=axes[:, 0].tolist(), fraction=0.03, pad=0.01, aspect=40)
    bar.set_label("fraction removed")
    return fig


COST_STEPS = {
    "score": "scoring",
    "plan": "planning (rule)",
    "prune": "pruning",
    "recover": "recovery",
    "evaluate": "evaluation",
}


def cost(results: pd.DataFrame) -> plt.Figure | None:
    data = results[(results["kind"] == "cost") & (results["metric"] == "seconds")]
    if data.empty:
        return None
    models = _models(data)
    fig, axes = _grid(1, len(models), width=5.5, height=0.6 + 0.32 * data["method"].nunique())
    for ax, model in zip(axes[0], models, strict=True):
        here = data[data["model"] == model]
        # Scoring happens once per model and method: count it once; every other step per job.
        parts = {}
        for step, name in COST_STEPS.items():
            rows = here[here["task"] == step]
            if step == "score":
                parts[name] = rows.groupby("method_label", sort=False)["value"].first()
            elif step in ("plan", "prune"):
                parts[name] = (
                    rows[rows["recovery"] == "none"].groupby("method_label", sort=False)["value"].sum()
                )
            else:
                parts[name] = rows.groupby("method_label", sort=False)["value"].sum()
        table = pd.DataFrame(parts).fillna(0.0)
        table = table.loc[:, table.sum() > 0]
        table.plot.barh(stacked=True, ax=ax, legend=False, colormap="Set2")
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("wall-clock time (s)")
        ax.set_ylabel("")
        ax.grid(alpha=0.3, axis="x")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right center", fontsize=8, frameon=False)
    return fig


def draw_all(results: pd.DataFrame, config: dict[str, Any], out_dir: str | Path) -> list[str]:
    """Draw every plot that has data; returns the names written (``name.png`` and ``name.svg``)."""
    from prunebench.report.styles import method_styles

    headline = config["evaluation"]["zeroshot"]["headline"]
    styles = method_styles(config)
    makers: dict[str, Callable[[], plt.Figure | None]] = {
        "ppl_vs_ratio": lambda: ppl_vs_ratio(results, styles),
        "accuracy_vs_ratio": lambda: accuracy_vs_ratio(results, headline, styles),
        "speedup_vs_ratio": lambda: speedup_vs_ratio(results, styles),
        "pareto": lambda: pareto(results, headline, styles),
        "latency_per_setting": lambda: latency_per_setting(results, styles),
        "structure": lambda: structure(config),
        "cost": lambda: cost(results),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in makers.items():
        fig = make()
        if fig is None:
            continue
        for ext in ("png", "svg"):
            fig.savefig(out_dir / f"{name}.{ext}", dpi=120, bbox_inches="tight")
        plt.close(fig)
        written.append(name)
    return written
