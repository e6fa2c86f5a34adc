"""The naive greedy search, kept as the reference that the fast search must match exactly.

Removed sublayers are swapped for stand-in modules that add nothing (as the official masked layers
do) and every candidate is scored by full forward passes of the model, in the official list order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.methods.greedy_search import CandidateList, Criterion, SearchResult, accumulate, pick
from prunebench.methods.removal_order import Removal
from prunebench.models import get_adapter


class _ZeroAttention(nn.Module):
    """Stand-in for a removed attention sublayer: contributes nothing to the residual stream."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, None]:
        return torch.zeros_like(hidden_states), None


class _ZeroMLP(nn.Module):
    """Stand-in for a removed MLP sublayer."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(hidden_states)


class _Identity(nn.Module):
    """Stand-in for a removed decoder block."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states


@contextmanager
def masked(model: nn.Module, removed: frozenset[Removal]) -> Iterator[nn.Module]:
    """The model with `removed` swapped for modules that add nothing (the official masked-layer way)."""
    layers = get_adapter(model).layers
    saved: list[tuple[nn.Module, str, nn.Module]] = []
    for r in sorted(removed, key=lambda r: (r.layer, r.part)):
        owner, attr, stand_in = {
            "attn": (layers[r.layer], "self_attn", _ZeroAttention()),
            "mlp": (layers[r.layer], "mlp", _ZeroMLP()),
            "block": (layers, str(r.layer), _Identity()),
        }[r.part]
        saved.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, stand_in)
    try:
        yield model
    finally:
        for owner, attr, original in reversed(saved):
            setattr(owner, attr, original)


def masked_score(
    model: nn.Module, batches: Sequence[torch.Tensor], criterion: Criterion, removed: frozenset[Removal]
) -> float:
    """Score of a removal set by full forward passes of the masked model (the naive way)."""
    device = get_adapter(model).lm_head.weight.device
    total = 0.0
    with torch.no_grad(), masked(model, removed):
        for b, batch in enumerate(batches):
            logits = model(input_ids=batch.to(device), use_cache=False).logits
            total = accumulate(total, criterion.row_values(logits, b))
    return criterion.finalize(total)


def reference_search(
    model: nn.Module,
    batches: Sequence[torch.Tensor],
    criterion: Criterion,
    candidates: CandidateList,
    max_steps: int,
) -> SearchResult:
    """The naive search, as the official loops do it: a full masked forward per candidate, list order."""
    order: list[Removal] = []
    scores: list[float] = []
    for _ in range(max_steps):
        listed = candidates(order)
        if not listed:
            break
        best: tuple[float, int] | None = None
        for position, candidate in enumerate(listed):
            score = masked_score(model, batches, criterion, frozenset([*order, candidate]))
            if pick(best, score, position):
                best = (score, position)
        if best is None:
            raise PrunebenchError(f"no candidate gives a finite score at step {len(order) + 1}")
        order.append(listed[best[1]])
        scores.append(best[0])
    return SearchResult(order, scores)
