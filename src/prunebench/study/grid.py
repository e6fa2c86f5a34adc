"""The study grid: every model variant the DAG evaluates, and the paths of its outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DENSE = "dense"


def ratio_tag(ratio: float) -> str:
    """The path component of a ratio: ``0.2`` -> ``0.20``."""
    return f"{ratio:.2f}"


@dataclass(frozen=True)
class Variant:
    """One evaluated model: the dense base, or a method at a ratio after a recovery variant."""

    model: str
    method: str
    ratio: str
    recovery: str

    @property
    def directory(self) -> str:
        return f"results/{self.model}/{self.method}/r{self.ratio}/{self.recovery}"


def recovered_at(config: dict[str, Any], recovery: str, ratio: float) -> bool:
    """Whether recovery variant ``recovery`` runs at ``ratio`` (its ``ratios`` key; default all)."""
    return recovery == "none" or ratio in config["recovery"][recovery].get("ratios", config["ratios"])


def variants(config: dict[str, Any]) -> list[Variant]:
    """The dense model once per model, then every method x ratio x recovery variant."""
    out = []
    for model in config["models"]:
        out.append(Variant(model, DENSE, ratio_tag(0.0), "none"))
        for method in config["methods"]:
            for ratio in config["ratios"]:
                for recovery in config["recovery"]:
                    if recovered_at(config, recovery, ratio):
                        out.append(Variant(model, method, ratio_tag(ratio), recovery))
    return out
