"""Depth methods: a ratio-independent removal order, and the shortest prefix that reaches a ratio."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from prunebench.errors import PrunebenchError
from prunebench.models.adapter import ModelAdapter
from prunebench.models.counting import decoder_params, sublayer_params
from prunebench.plan import LayerPlan, PruningPlan

Part = Literal["attn", "mlp", "block"]
# Relative slack when comparing removed parameters with ``ratio × total``: the float product can land a
# hair above an exact decimal share (0.55 × 20 blocks asks for 11.000000000000002 blocks). 1e-9 of the
# decoder is far less than any removable block or sublayer.
REACH_SLACK = 1e-9


@dataclass(frozen=True)
class Removal:
    """One step of a removal order, in dense-model layer indices."""

    layer: int
    part: Part

    def to_json(self) -> list[Any]:
        return [self.layer, self.part]

    @classmethod
    def from_json(cls, item: list[Any]) -> Removal:
        return cls(int(item[0]), item[1])


def removal_params(adapter: ModelAdapter, removal: Removal) -> int:
    """Decoder parameters that one removal takes away (norms included)."""
    if removal.part == "block":
        return sublayer_params(adapter, removal.layer, "attn") + sublayer_params(
            adapter, removal.layer, "mlp"
        )
    return sublayer_params(adapter, removal.layer, removal.part)


def reaches(removed: int, total: int, ratio: float) -> bool:
    """True when ``removed`` of ``total`` parameters is at least the fraction ``ratio`` (up to float error)."""
    return removed >= (ratio - REACH_SLACK) * total


def longest_prefix_keeping_a_sublayer(adapter: ModelAdapter, order: list[Removal]) -> int:
    """The length of the longest prefix of ``order`` after which at least one decoder sublayer remains."""
    removed: set[tuple[int, str]] = set()
    for index, step in enumerate(order):
        removed |= (
            {(step.layer, "attn"), (step.layer, "mlp")} if step.part == "block" else {(step.layer, step.part)}
        )
        if len(removed) == 2 * adapter.num_layers:
            return index
    return len(order)


def plan_from_order(
    adapter: ModelAdapter,
    order: list[Removal],
    target_ratio: float,
    method: str,
    params: dict[str, Any],
    base_model: str,
    max_steps: int | None = None,
) -> PruningPlan:
    """The plan made of the shortest prefix of ``order`` whose removed decoder parameters reach the ratio.

    Attention and MLP sublayers differ in size, so the prefix is found on real parameter counts: the
    count is a ceiling in parameters (the fewest steps whose parameters are at least the target, see
    :func:`reaches`). The official codes take a count instead (BlockPruner, Shortened-LLaMA, SLEB) or
    floor a fraction of units (FinerCut: ``int(2L·r)`` sublayers); each method's docstring says which.
    The native count (blocks or sublayers removed) is recorded in ``plan.notes``. The prefix never
    removes every sublayer: a model without decoder layers is not a language model.
    """
    if not 0 <= target_ratio < 1:
        raise PrunebenchError(f"ratio must be in [0, 1), got {target_ratio}")
    allowed = order if max_steps is None else order[:max_steps]
    total = decoder_params(adapter.model)
    longest = longest_prefix_keeping_a_sublayer(adapter, allowed)
    kept_one, allowed = longest < len(allowed), allowed[:longest]
    removed, prefix = 0, 0
    while not reaches(removed, total, target_ratio) and prefix < len(allowed):
        removed += removal_params(adapter, allowed[prefix])
        prefix += 1
    if not reaches(removed, total, target_ratio):
        raise PrunebenchError(
            f"{method}: removing all {len(allowed)} allowed steps{' (one sublayer must stay)' if kept_one else ''} removes "
            f"{removed / total:.3f} of decoder parameters, less than the target ratio {target_ratio}"
        )
    layers: dict[int, LayerPlan] = {}
    for step in allowed[:prefix]:
        lp = layers.setdefault(step.layer, LayerPlan())
        if step.part in ("attn", "block"):
            lp.kv_heads = []
        if step.part in ("mlp", "block"):
            lp.mlp_channels = []
    parts = [s.part for s in allowed[:prefix]]
    return PruningPlan(
        base_model=base_model,
        method=method,
        params=params,
        target_ratio=target_ratio,
        layers=layers,
        notes={
            "native": {
                "blocks_removed": parts.count("block"),
                "attn_removed": parts.count("attn"),
                "mlp_removed": parts.count("mlp"),
                "steps": prefix,
            },
            "removed_in_order": [s.to_json() for s in allowed[:prefix]],
        },
    )
