"""Recovery after pruning: LoRA, continued pretraining, CFSP-weighted LoRA, CPT then LoRA.

The names below are imported on first use (PEP 562), so that ``prunebench.recovery.config`` (no torch)
can be read by the CLI's argument parser without importing the training code.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "Budget": "config",
    "RecoveryConfig": "config",
    "recover": "run",
    "available_variants": "variants",
    "get_variant": "variants",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
