"""The study's plots (matplotlib, PNG and SVG), each drawn from the tidy results table."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd

from prunebench.study.grid import DENSE, ratio_tag

CAPTIONS = {
    "ppl_vs_ratio": "Perplexity against the achieved fraction of decoder parameters removed, one panel per "
    "recovery variant. The dense model sits at 0. Lower is better.",
    "accuracy_vs_ratio": "Mean zero-shot accuracy over the evaluated tasks against the achieved ratio, one panel "
    "per recovery variant. The dashed line is the dense model.",
    "speedup_vs_ratio": "Measured decode and prefill speed-up over the dense model (filled markers, measured side "
    "by side in one process) and the ideal speed-up from FLOPs (hollow markers), against the achieved ratio.",
    "latency_per_setting": "Measured speed-up over the dense model per batch size x prompt length, one panel "
    "per setting (columns) and per model and phase (rows): filled markers measured side by side with the "
    "dense model (solid: eager engine, dashed: compiled engine), hollow markers the ideal speed-up of that "
    "cell from FLOPs and bytes (roofline with the device peaks measured in the same job).",
    "pareto": "Accuracy against measured decode latency for every variant (recovered variants share the "
    "latency of their pruned shape); the line joins the Pareto front (no other variant is both faster and "
    "more accurate).",
    "structure": "What each method removed at each ratio: the fraction of every layer's attention (KV groups) and "
    "MLP (channels) that is gone. Dark = removed.",
    "cost": "Cost of each method: scoring (once per model), pruning (per ratio) and recovery (per variant), "
    "wall-clock seconds from Snakemake's benchmark files.",
}


MARKERS = "osD^v<>pPX*h"


def _style(label: str, labels: list[str]) -> dict[str, Any]:
    """The same colour and marker for a method in every plot (20 colours, so none repeats soon)."""
    i = sorted(labels).index(label)
    return {"color": plt.get_cmap("tab20")(i % 20), "marker": MARKERS[i % len(MARKERS)]}


def _recoveries(frame: pd.DataFrame) -> list[str]:
    """Recovery variants present, ``none`` first, then in order of appearance."""
    found = list(dict.fromkeys(frame["recovery"]))
    return sorted(found, key=lambda r: (r != "none", found.index(r))) or ["none"]


def _pruned(results: pd.DataFrame) -> pd.DataFrame:
    return results[results["method"] != DENSE]


def _panels(recoveries: list[str]) -> tuple[plt.Figure, list[plt.Axes]]:
    fig, axes = plt.subplots(
        1, len(recoveries), figsize=(4.2 * len(recoveries), 3.6), squeeze=False, sharey=True
    )
    return fig, list(axes[0])


def ppl_vs_ratio(results: pd.DataFrame) -> plt.Figure | None:
    ppl = results[results["kind"] == "ppl"]
    if ppl.empty:
        return None
    dataset, seqlen = ppl.iloc[0]["dataset"], ppl.iloc[0]["seqlen"]
    ppl = ppl[(ppl["dataset"] == dataset) & (ppl["seqlen"] == seqlen)]
    dense = ppl[ppl["method"] == DENSE]["value"]
    labels = list(_pruned(ppl)["method_label"].unique())
    recoveries = _recoveries(_pruned(ppl))
    fig, axes = _panels(recoveries)
    for ax, recovery in zip(axes, recoveries, strict=True):
        part = _pruned(ppl)[_pruned(ppl)["recovery"] == recovery]
        for label, group in part.groupby("method_label", sort=True):
            group = group.sort_values("achieved_decoder_ratio")
            xs = [0.0, *group["achieved_decoder_ratio"]]
            ys = [dense.iloc[0] if not dense.empty else np.nan, *group["value"]]
            ax.plot(xs, ys, label=label, **_style(label, labels))
        ax.set_yscale("log")
        ax.set_title(f"recovery: {recovery}")
        ax.set_xlabel("achieved decoder ratio")
        ax.grid(alpha=0.3)
    _plain_log_labels(axes[0])
    axes[0].set_ylabel(f"perplexity ({dataset}, {int(seqlen)} tokens)")
    axes[0].legend(fontsize=7, loc="upper left")
    return fig


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


def accuracy_vs_ratio(results: pd.DataFrame, headline: str) -> plt.Figure | None:
    zs = results[(results["kind"] == "zeroshot") & (results["metric"] == headline)]
    if zs.empty:
        return None
    keys = ["method", "method_label", "recovery", "achieved_decoder_ratio"]
    mean = zs.groupby(keys, as_index=False)["value"].mean()
    dense = mean[mean["method"] == DENSE]["value"]
    labels = list(_pruned(mean)["method_label"].unique())
    recoveries = _recoveries(_pruned(zs))
    fig, axes = _panels(recoveries)
    for ax, recovery in zip(axes, recoveries, strict=True):
        part = _pruned(mean)[_pruned(mean)["recovery"] == recovery]
        for label, group in part.groupby("method_label", sort=True):
            group = group.sort_values("achieved_decoder_ratio")
            ax.plot(group["achieved_decoder_ratio"], group["value"], label=label, **_style(label, labels))
        if not dense.empty:
            ax.axhline(dense.iloc[0], color="black", linestyle="--", linewidth=1, label="dense")
        ax.set_title(f"recovery: {recovery}")
        ax.set_xlabel("achieved decoder ratio")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"mean zero-shot {headline}")
    axes[0].legend(fontsize=7)
    return fig


def speedup_vs_ratio(results: pd.DataFrame) -> plt.Figure | None:
    speed = _pruned(results[(results["kind"] == "speedup") & (results["recovery"] == "none")])
    if speed.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), squeeze=False)
    for ax, (measured, ideal, title) in zip(
        axes[0],
        [
            ("measured_decode", "ideal_decode_flops", "decode"),
            ("measured_prefill", "ideal_prefill_flops", "prefill"),
        ],
        strict=True,
    ):
        labels = list(speed["method_label"].unique())
        for label, group in speed.groupby("method_label", sort=True):
            style = _style(label, labels)
            for metric, line, fill in ((measured, "-", style["color"]), (ideal, "--", "none")):
                points = group[group["metric"] == metric].groupby("achieved_decoder_ratio")["value"].median()
                ax.plot(points.index, points.values, line, color=style["color"], marker=style["marker"],
                        markerfacecolor=fill, label=label if metric == measured else None)  # fmt: skip
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_title(f"{title} speed-up (filled: measured, hollow: ideal)")
        ax.set_xlabel("achieved decoder ratio")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("speed-up over dense")
    axes[0][1].legend(fontsize=7, ncol=2)
    return fig


ENGINE_LINES = {"eager": "-", "compiled": "--"}


def latency_per_setting(results: pd.DataFrame) -> plt.Figure | None:
    """Small multiples: one panel per (batch size, prompt length) and per (model, phase); measured speed-up
    per engine and the cell's ideal speed-up against the achieved decoder ratio."""
    speed = _pruned(results[(results["kind"] == "speedup") & (results["recovery"] == "none")])
    if speed.empty:
        return None
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
    labels = list(speed["method_label"].unique())
    for (model, phase), row_axes in zip(rows, axes, strict=True):
        for (batch, prompt), ax in zip(settings, row_axes, strict=True):
            cell = speed[
                (speed["model"] == model)
                & (speed["batch_size"] == batch)
                & (speed["prompt_length"] == prompt)
            ]
            for label, group in cell.groupby("method_label", sort=True):
                style = _style(label, labels)
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


def pareto(results: pd.DataFrame, headline: str) -> plt.Figure | None:
    zs = results[(results["kind"] == "zeroshot") & (results["metric"] == headline)]
    lat = results[(results["kind"] == "latency") & (results["metric"] == "decode_median_s_per_token")]
    if zs.empty or lat.empty:
        return None
    # Latency is measured once per pruned shape (recovery changes weights, not shapes).
    shape = ["method", "method_label", "target_ratio"]
    acc = zs.groupby([*shape, "recovery"])["value"].mean().rename("accuracy").reset_index()
    latency = lat.groupby(shape)["value"].median().rename("latency").reset_index()
    points = acc.merge(latency, on=shape).dropna().sort_values("latency")
    fig, ax = plt.subplots(figsize=(6, 4))
    labels = list(points["method_label"].unique())
    for label, group in points.groupby("method_label", sort=True):
        style = _style(label, labels)
        ax.scatter(
            group["latency"] * 1e3,
            group["accuracy"],
            color=style["color"],
            marker=style["marker"],
            label=label,
        )
    front, best = [], -np.inf
    for row in points.itertuples():
        if row.accuracy > best:
            front.append(row)
            best = row.accuracy
    ax.plot([r.latency * 1e3 for r in front], [r.accuracy for r in front], color="black", linewidth=1)
    ax.set_xlabel("decode latency per token (ms, median)")
    ax.set_ylabel(f"mean zero-shot {headline}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
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


def structure(config: dict[str, Any], results_dir: Path = Path("results")) -> plt.Figure | None:
    from prunebench.models import get_adapter
    from prunebench.models.checkpoint import load_skeleton

    model = next(iter(config["models"]))
    adapter = get_adapter(load_skeleton(config["models"][model]["path"]))
    methods = list(config["methods"])
    fig, axes = plt.subplots(
        len(methods), 1, figsize=(8, 1.1 + 0.55 * len(config["ratios"]) * len(methods)), squeeze=False
    )
    for ax, method in zip(axes[:, 0], methods, strict=True):
        rows, labels = [], []
        for ratio in config["ratios"]:
            path = results_dir / model / method / f"r{ratio_tag(ratio)}" / "none" / "model" / "plan.json"
            if not path.is_file():
                continue
            plan = json.loads(path.read_text())
            rows.append(
                _removed_fractions(plan, adapter.num_layers, adapter.num_kv_heads, adapter.intermediate_size)
            )
            labels += [f"r={ratio} attn", f"r={ratio} mlp"]
        if not rows:
            ax.set_visible(False)
            continue
        ax.imshow(np.vstack(rows), aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
        ax.set_xticks(range(adapter.num_layers))
        ax.tick_params(axis="x", labelsize=6)
        ax.set_title(config["methods"][method].get("label", method), fontsize=8, loc="left")
    axes[-1, 0].set_xlabel(f"layer of {model}")
    fig.tight_layout()
    return fig


def cost(results: pd.DataFrame) -> plt.Figure | None:
    data = results[(results["kind"] == "cost") & (results["metric"] == "seconds")]
    if data.empty:
        return None
    # Scoring happens once per model and method: count it once, pruning per ratio, recovery per variant.
    score = data[data["task"] == "score"].groupby("method_label")["value"].first()
    prune = (
        data[(data["task"] == "prune") & (data["recovery"] == "none")].groupby("method_label")["value"].sum()
    )
    recover = data[data["task"] == "recover"].groupby("method_label")["value"].sum()
    table = pd.concat(
        [score.rename("score"), prune.rename("prune (all ratios)"), recover.rename("recover (all)")], axis=1
    )
    fig, ax = plt.subplots(figsize=(7, 3.6))
    table.fillna(0).plot.barh(stacked=True, ax=ax)
    ax.set_xlabel("wall-clock seconds")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def draw_all(results: pd.DataFrame, config: dict[str, Any], out_dir: str | Path) -> list[str]:
    """Draw every plot that has data; returns the names written (``name.png`` and ``name.svg``)."""
    headline = config["evaluation"]["zeroshot"]["headline"]
    makers: dict[str, Callable[[], plt.Figure | None]] = {
        "ppl_vs_ratio": lambda: ppl_vs_ratio(results),
        "accuracy_vs_ratio": lambda: accuracy_vs_ratio(results, headline),
        "speedup_vs_ratio": lambda: speedup_vs_ratio(results),
        "latency_per_setting": lambda: latency_per_setting(results),
        "pareto": lambda: pareto(results, headline),
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
        fig.tight_layout()
        for ext in ("png", "svg"):
            fig.savefig(out_dir / f"{name}.{ext}", dpi=120)
        plt.close(fig)
        written.append(name)
    return written
