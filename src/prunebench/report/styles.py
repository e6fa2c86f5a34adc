"""One colour and one marker per method, the same in every plot of a study.

The order is the method registry's (``prunebench.methods.available_methods``), then the study's other
entries (ablations such as ``flap-nocomp``, rule methods) in config order, so a method's style does not
depend on which methods a plot happens to show; the dense model is always black.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from prunebench.study.grid import DENSE

MARKERS = "osD^v<>pPX*hH8d"
DENSE_STYLE = {"color": "black", "marker": "*"}


def method_order(config: dict[str, Any]) -> list[str]:
    """The study's method entries in style order: registered ones in registry order, then the rest."""
    from prunebench.methods import available_methods

    registered = [m for m in available_methods() if m in config["methods"]]
    return registered + [m for m in config["methods"] if m not in registered]


def method_styles(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{method entry: {"color", "marker"}}`` for every method of the study, plus ``dense``.

    Colours come from tab10, then tab20's light shades; colour and marker cycle with different
    periods, so no two of the first 60 methods share both.
    """
    from prunebench.methods import available_methods

    everything = list(available_methods()) + [m for m in config["methods"] if m not in available_methods()]
    palette = [plt.get_cmap("tab10")(i) for i in range(10)] + [
        plt.get_cmap("tab20")(2 * i + 1) for i in range(10)
    ]
    styles = {
        name: {"color": palette[i % len(palette)], "marker": MARKERS[i % len(MARKERS)]}
        for i, name in enumerate(everything)
        if name in config["methods"]
    }
    return {**styles, DENSE: dict(DENSE_STYLE)}
