"""The latency-per-setting small multiples: one panel per (batch size, prompt length) and (model, phase)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from prunebench.report.plots import latency_per_setting

SETTINGS = [(1, 32), (1, 128), (4, 32)]
MODELS = ["demo", "smollm2"]


def speedup_rows() -> pd.DataFrame:
    """Speed-up rows of two models x two methods x two engines x three settings, plus a dense and a
    recovered row that the plot must leave out."""
    rows = []
    for model in MODELS:
        for method, ratio in (("flap", 0.3), ("shortgpt", 0.5)):
            for batch, prompt in SETTINGS:
                for engine in ("eager", "compiled"):
                    for metric, value in (
                        ("measured_decode", 1.1 if engine == "eager" else 1.6),
                        ("measured_prefill", 1.2),
                        ("ideal_decode", 1.9),
                        ("ideal_prefill", 1.8),
                    ):
                        rows.append(
                            {"model": model, "method": method, "method_label": method, "recovery": "none",
                             "achieved_decoder_ratio": ratio, "kind": "speedup", "metric": metric,
                             "value": value, "batch_size": batch, "prompt_length": prompt, "engine": engine}
                        )  # fmt: skip
    extra = dict(rows[0])
    rows.append(extra | {"method": "dense", "method_label": "dense", "value": 99.0})
    rows.append(extra | {"recovery": "lora", "value": 99.0})
    return pd.DataFrame(rows)


def test_one_panel_per_setting_and_model_phase_with_measured_beside_ideal() -> None:
    figure = latency_per_setting(speedup_rows())
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert len(panels) == len(SETTINGS) * len(MODELS) * 2
    titles = {ax.get_title() for ax in panels}
    assert "smollm2 decode: batch 4, prompt 32" in titles and "demo prefill: batch 1, prompt 128" in titles
    panel = next(ax for ax in panels if ax.get_title() == "demo decode: batch 1, prompt 32")
    # per method: one ideal line (hollow, dotted) and one measured line per engine
    lines = [line for line in panel.get_lines() if list(line.get_ydata()) != [1.0, 1.0]]  # not y = 1
    styles = sorted(line.get_linestyle() for line in lines)
    assert styles == sorted(["--", "-", ":"] * 2)
    values = {line.get_linestyle(): set(np.round(line.get_ydata(), 3)) for line in lines}
    assert values[":"] == {1.9} and values["-"] == {1.1} and values["--"] == {1.6}
    assert all(99.0 not in set(line.get_ydata()) for ax in panels for line in ax.get_lines())
    labels = next(ax for ax in figure.axes if ax.get_legend()).get_legend().get_texts()
    assert {t.get_text() for t in labels} == {
        f"{m} ({e})" for m in ("flap", "shortgpt") for e in ("eager", "compiled")
    }
    plt.close(figure)


def test_no_speedups_no_plot() -> None:
    rows = speedup_rows()
    assert latency_per_setting(rows[rows["kind"] != "speedup"]) is None
