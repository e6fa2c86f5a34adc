"""The perplexity plot stays readable whatever the range of its values."""

from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker
import pandas as pd

from prunebench.report.plots import ppl_vs_ratio


def ppl_rows(values: dict[str, float]) -> pd.DataFrame:
    """Perplexity rows of one data set: the dense model (ratio 0) and one pruned model per entry."""
    rows = [{"method": "dense", "method_label": "dense", "achieved_decoder_ratio": 0.0, "value": 47.4}]
    rows += [
        {"method": name, "method_label": name, "achieved_decoder_ratio": 0.2, "value": value}
        for name, value in values.items()
    ]
    frame = pd.DataFrame(rows)
    return frame.assign(model="m", kind="ppl", dataset="austen", seqlen=256, recovery="none")


def tick_labels(figure: plt.Figure, minor: bool) -> list[str]:
    figure.canvas.draw()
    axis = figure.axes[0].yaxis
    ticks = axis.get_minor_ticks() if minor else axis.get_major_ticks()
    return [t.label1.get_text() for t in ticks if t.label1.get_visible() and t.label1.get_text()]


def test_a_collapse_beside_the_dense_model_leaves_only_plain_decade_labels() -> None:
    figure = ppl_vs_ratio(ppl_rows({"flap": 65.5, "magnitude-sp": 1_144_591.4}))
    assert isinstance(figure.axes[0].yaxis.get_minor_formatter(), matplotlib.ticker.NullFormatter)
    assert tick_labels(figure, minor=False)
    assert tick_labels(figure, minor=True) == []
    assert "1,000" in tick_labels(figure, minor=False)
    plt.close(figure)


def test_values_within_a_decade_keep_their_intermediate_labels() -> None:
    figure = ppl_vs_ratio(ppl_rows({"flap": 65.5, "wanda-sp": 73.5}))
    minor = tick_labels(figure, minor=True)
    assert minor, "a plot spanning less than a decade needs labels between the decades"
    assert all(label.replace(",", "").isdigit() for label in minor)
    plt.close(figure)
