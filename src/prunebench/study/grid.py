"""The study grid: every model variant the DAG evaluates, and the paths of its outputs."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

DENSE = "dense"
#: The folder that holds every study's outputs, each in results/<study>/.
RESULTS_ROOT = "results"
#: results/<study>/<name> folders of the whole study, and results/<study>/<model>/<name> of one model's
#: calibration.
RESULTS_FOLDERS = ("tables", "plots", "report", "logs", "benchmarks")
CALIBRATION_FOLDER = "calibration"


def ratio_tag(ratio: float) -> str:
    """The path component of a ratio, which names exactly that number: ``0.2`` -> ``0.20``, ``0.125`` -> ``0.125``.

    Two decimals when they are exact, else the shortest decimal that reads back as ``ratio``
    (``float(ratio_tag(r)) == r``), so two different ratios never share a path.
    """
    ratio = float(ratio) + 0.0  # -0.0 -> 0.0
    short = f"{ratio:.2f}"
    return short if float(short) == ratio else format(Decimal(repr(ratio)), "f")


def ratio_of(config: dict[str, Any], tag: str) -> float:
    """The configured ratio whose path component is ``tag`` (what a job prunes to, never the tag)."""
    return {ratio_tag(r): r for r in config["ratios"]}[tag]


def study_root(config: dict[str, Any]) -> str:
    """The folder of every output of the study: ``results/<study>`` (``study`` is a validated name)."""
    return f"{RESULTS_ROOT}/{config['study']}"


@dataclass(frozen=True)
class Variant:
    """One evaluated model: the dense base, or a method at a ratio after a recovery variant."""

    model: str
    method: str
    ratio: str
    recovery: str
    root: str = RESULTS_ROOT  # the study's folder (study_root)

    @property
    def directory(self) -> str:
        return f"{self.root}/{self.model}/{self.method}/r{self.ratio}/{self.recovery}"


def recovered(config: dict[str, Any], recovery: str, method: str, ratio: float) -> bool:
    """Whether recovery variant ``recovery`` runs for ``method`` at ``ratio`` (its ``methods`` and
    ``ratios`` keys; default all)."""
    if recovery == "none":
        return True
    spec = config["recovery"][recovery]
    return ratio in spec.get("ratios", config["ratios"]) and method in spec.get("methods", config["methods"])


def variants(config: dict[str, Any]) -> list[Variant]:
    """The dense model once per model, then every method x ratio x recovery variant."""
    out = []
    root = study_root(config)
    for model in config["models"]:
        out.append(Variant(model, DENSE, ratio_tag(0.0), "none", root))
        for method in config["methods"]:
            for ratio in config["ratios"]:
                for recovery in config["recovery"]:
                    if recovered(config, recovery, method, ratio):
                        out.append(Variant(model, method, ratio_tag(ratio), recovery, root))
    return out
