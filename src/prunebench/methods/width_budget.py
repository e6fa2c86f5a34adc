"""Uniform width baselines: how many KV groups and MLP channels every layer loses for a ratio.

Official rule (``CASIA-IVA-Lab/FLAP``, ``lib/prune.py``: ``prune_wanda_sp``, ``prune_magnitude_sp`` and
``prune_flap`` with ``--structure UL-UM``): with the pruning ratio ``r`` every layer loses
``int(r * num_heads)`` attention heads and ``int(m * r)`` MLP channels, both counts **floored**, in
Python float arithmetic. :func:`native_counts` computes exactly that. Extension (GQA, ours): heads are
counted in KV groups, ``int(r * num_kv_heads)``; for MHA a KV group is one head and the rule is the
official one. Since ``r < 1``, at least one KV group and one channel always stay.

Study ratio (``budget="decoder"``): the study's ratio is a fraction of decoder-layer parameters. The
native ``r`` is chosen so that the decoder ratio of its floored counts comes closest to the target (ties:
the smaller ``r``); :func:`uniform_counts` searches every ``r`` at which a count steps. With few KV
groups a group step is coarse: on a model with three KV groups, every ``r < 1/3`` removes no attention
at all, so a study ratio between what ``511/1536`` channels and what one group plus ``512`` channels
remove cannot be reached. A target missed by more than :data:`TOLERANCE` is refused, naming the
nearest reachable ratios.

:func:`nearest_keep_counts` is prunebench's earlier rule (KV groups kept = ``round(n_kv * (1 − t))``,
channels absorb the rest). It is not the official rule; it is kept, labelled, for the benchmarks whose
recorded figures were measured with it.

Aligned widths (``round_to``, a **deviation** from every official uniform rule, off by default): kept MLP
channel counts are rounded to the nearest multiple of ``round_to`` (at least one multiple, and a count
that reaches the dense width keeps the layer whole) and kept KV-group counts to a multiple of
:func:`kv_unit`, so that every pruned matrix dimension is a multiple of ``round_to``, which is what
tensor-core kernels want (:func:`align_count`). ``uniform_counts`` then searches the aligned counts of
every step of ``r``, so the decoder ratio still lands within :data:`TOLERANCE` where the aligned grid
allows.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prunebench.errors import PrunebenchError
from prunebench.models.adapter import ModelAdapter
from prunebench.models.counting import decoder_params, kv_group_params, mlp_channel_params

BUDGETS = ("decoder", "native")
# Largest accepted |achieved decoder ratio − study ratio| for budget="decoder".
TOLERANCE = 0.02
COUNT_RULE = (
    "official floor: int(r * num_kv_heads) KV groups and int(intermediate_size * r) channels per layer"
)


@dataclass(frozen=True)
class UniformCounts:
    """What every layer loses under the official uniform rule, and the decoder ratio that achieves."""

    native_ratio: float  # r, the method's own --pruning_ratio
    kv_groups_removed: int  # per layer: int(r * num_kv_heads)
    channels_removed: int  # per layer: int(intermediate_size * r)
    decoder_ratio: float  # fraction of decoder-layer parameters removed
    round_to: int = 1  # kept widths aligned to this multiple (1: the official counts)

    def notes(self) -> dict[str, Any]:
        """The plan-note fields shared by the uniform width methods."""
        notes: dict[str, Any] = {
            "native_pruning_ratio": self.native_ratio,
            "count_rule": COUNT_RULE,
            "removed_kv_groups_per_layer": self.kv_groups_removed,
            "removed_channels_per_layer": self.channels_removed,
        }
        if self.round_to > 1:
            notes["count_rule"] += f", then kept widths rounded to multiples of {self.round_to}"
            notes["round_to"] = self.round_to
        return notes


def check_round_to(method: str, round_to: object) -> None:
    """``round_to`` must be a positive integer (1 = no alignment, the official rule)."""
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise PrunebenchError(
            f"{method}: round_to must be a positive integer (1 = official), got {round_to!r}"
        )


def round_to_deviation(round_to: int) -> str:
    """The plan-note line that labels aligned widths as a deviation from the official code."""
    return (
        f"round_to={round_to}: kept MLP channels (and KV groups where head_dim is not a multiple) rounded to "
        f"multiples of {round_to}; not in the official code, which keeps the counts its rule gives"
    )


def kv_unit(adapter: ModelAdapter, round_to: int) -> int:
    """Kept KV groups must be a multiple of this for ``kv * head_dim`` to be a multiple of ``round_to``
    (1 whenever ``head_dim`` already is; query widths ``kv * g * head_dim`` then are too)."""
    return round_to // math.gcd(round_to, adapter.head_dim)


def align_count(count: int, multiple: int, full: int) -> int:
    """``count`` kept units rounded to the nearest multiple of ``multiple`` (halves up, as CFSP's ``round_to``).

    0 and ``full`` (sublayer removed, layer kept whole) stay; any other count keeps at least one
    ``multiple``; a result that reaches ``full`` becomes ``full`` (the dense width, aligned or not).
    """
    if multiple == 1 or count in (0, full):
        return count
    aligned = max(multiple, (2 * count + multiple) // (2 * multiple) * multiple)
    return full if aligned >= full else aligned


def aligned_counts(adapter: ModelAdapter, groups: int, channels: int, round_to: int) -> tuple[int, int]:
    """Removed (KV groups, channels) per layer after aligning the kept counts (:func:`align_count`)."""
    n_kv, m = adapter.num_kv_heads, adapter.intermediate_size
    kept_kv = align_count(n_kv - groups, kv_unit(adapter, round_to), n_kv)
    return n_kv - kept_kv, m - align_count(m - channels, round_to, m)


def check_budget(method: str, budget: str) -> None:
    """A budget must be one of :data:`BUDGETS`."""
    if budget not in BUDGETS:
        raise PrunebenchError(f"{method}: budget must be one of {', '.join(BUDGETS)}, got {budget!r}")


def native_counts(adapter: ModelAdapter, ratio: float) -> tuple[int, int]:
    """``(int(r * num_kv_heads), int(intermediate_size * r))``: KV groups and channels removed per layer."""
    return int(ratio * adapter.num_kv_heads), int(adapter.intermediate_size * ratio)


class Costs:
    """Decoder parameters removed by one KV group in every layer of ``attn_layers`` and one channel in
    every layer of ``mlp_layers`` (default: all layers), over the dense total."""

    def __init__(
        self, adapter: ModelAdapter, attn_layers: range | None = None, mlp_layers: range | None = None
    ):
        every = range(adapter.num_layers)
        self.group = sum(kv_group_params(adapter, i) for i in (every if attn_layers is None else attn_layers))
        self.channel = sum(
            mlp_channel_params(adapter, i) for i in (every if mlp_layers is None else mlp_layers)
        )
        self.decoder = decoder_params(adapter.model)

    def ratio(self, groups: int, channels: int) -> float:
        return (groups * self.group + channels * self.channel) / self.decoder


def first_ratio(removed: Callable[[float], int], count: int) -> float:
    """The smallest float ``r`` in ``[0, 1]`` with ``removed(r) >= count``; ``removed`` must be
    non-decreasing in ``r`` and reach ``count`` at 1. Found by bisection over the floats themselves
    (non-negative doubles order like their bit patterns), so a step is located to the ulp."""

    def bits(x: float) -> int:
        return struct.unpack("<q", struct.pack("<d", x))[0]

    def value(b: int) -> float:
        return struct.unpack("<d", struct.pack("<q", b))[0]

    lo, hi = bits(0.0), bits(1.0)
    if removed(0.0) >= count:
        return 0.0
    while hi - lo > 1:  # removed(value(lo)) < count <= removed(value(hi))
        mid = (lo + hi) // 2
        if removed(value(mid)) >= count:
            hi = mid
        else:
            lo = mid
    return value(hi)


def _first_ratio(count: int, units: int) -> float:
    """The smallest float ``r`` with ``int(r * units) >= count``."""
    return first_ratio(lambda r: int(r * units), count)


def _steps(adapter: ModelAdapter) -> list[float]:
    """Every ``r`` in ``[0, 1)`` at which a floored count changes, ascending (0 included)."""
    units = (adapter.num_kv_heads, adapter.intermediate_size)
    return sorted({0.0} | {_first_ratio(c, n) for n in units for c in range(1, n)})


def uniform_counts(
    adapter: ModelAdapter,
    target_ratio: float,
    budget: str = "decoder",
    method: str = "uniform width",
    round_to: int = 1,
) -> UniformCounts:
    """The official uniform counts for ``target_ratio`` (kept widths aligned to ``round_to`` when > 1).

    ``budget="native"``: ``target_ratio`` is ``r`` itself. ``budget="decoder"``: ``r`` is the step whose
    counts give the decoder ratio closest to ``target_ratio`` (ties: the smaller ``r``); a miss larger
    than :data:`TOLERANCE` raises ``PrunebenchError`` (prefixed with ``method``) naming the reachable
    ratios on either side.
    """
    if not 0 <= target_ratio < 1:
        raise PrunebenchError(f"{method}: ratio must be in [0, 1), got {target_ratio}")
    check_budget(method, budget)
    check_round_to(method, round_to)
    costs = Costs(adapter)

    def counts(r: float) -> UniformCounts:
        groups, channels = aligned_counts(adapter, *native_counts(adapter, r), round_to)
        return UniformCounts(r, groups, channels, costs.ratio(groups, channels), round_to)

    if budget == "native":
        return counts(target_ratio)
    options = [counts(r) for r in _steps(adapter)]
    rule = (
        f"the official uniform rule (int(r*{adapter.num_kv_heads}) of {adapter.num_kv_heads} KV groups "
        f"and int(r*{adapter.intermediate_size}) channels removed per layer)"
    )
    if round_to == 1:
        return closest(options, target_ratio, method, rule)
    rule += f" with kept widths rounded to multiples of {round_to}"
    return closest(
        options, target_ratio, method, rule, "choose a reachable ratio, a smaller round_to or budget=native"
    )


def closest(
    options: list[UniformCounts],
    target_ratio: float,
    method: str,
    rule: str,
    remedy: str = "choose a reachable ratio or budget=native",
) -> UniformCounts:
    """The option whose decoder ratio is closest to ``target_ratio`` (ties: the first, so the smaller ``r``
    when ``options`` ascend). A miss beyond :data:`TOLERANCE` raises ``PrunebenchError`` naming ``rule``
    and the reachable ratios on either side."""
    best = min(options, key=lambda c: abs(c.decoder_ratio - target_ratio))
    if abs(best.decoder_ratio - target_ratio) > TOLERANCE:
        below = max((c for c in options if c.decoder_ratio <= target_ratio), key=lambda c: c.decoder_ratio)
        above = [c for c in options if c.decoder_ratio > target_ratio]
        reach = f"{below.decoder_ratio:.3f} (r={below.native_ratio:.4f})"
        if above:
            reach += f" and {above[0].decoder_ratio:.3f} (r={above[0].native_ratio:.4f})"
        raise PrunebenchError(
            f"{method}: {rule} reaches decoder ratios {reach} around {target_ratio}, not within {TOLERANCE}; "
            f"{remedy}"
        )
    return best


def nearest_keep_counts(adapter: ModelAdapter, target_ratio: float) -> tuple[int, int]:
    """Per-layer (KV groups kept, channels kept) by prunebench's earlier rule -- **not** the official one.

    KV groups kept = ``round(n_kv * (1 − t))`` (at least one); the channel count then absorbs the
    rounding error so the decoder ratio lands within 0.02 of ``t``. On a model with three KV groups
    this removes one group in every layer at ``t = 0.2``. Kept for the latency and recovery benchmarks,
    whose recorded figures used it; the methods use :func:`uniform_counts`.
    """
    if not 0 <= target_ratio < 1:
        raise PrunebenchError(f"ratio must be in [0, 1), got {target_ratio}")
    n_kv, n_ch = adapter.num_kv_heads, adapter.intermediate_size
    costs = Costs(adapter)
    kv_keep = max(1, round(n_kv * (1 - target_ratio)))
    remaining = target_ratio * costs.decoder - (n_kv - kv_keep) * costs.group
    ch_keep = min(n_ch, max(1, n_ch - round(remaining / costs.channel)))
    achieved = costs.ratio(n_kv - kv_keep, n_ch - ch_keep)
    if target_ratio > 0 and abs(achieved - target_ratio) > TOLERANCE:
        raise PrunebenchError(
            f"a uniform split can reach a decoder ratio of {achieved:.3f}, not {target_ratio} "
            f"({n_kv} KV groups of {adapter.group_size} heads, {n_ch} channels per layer)"
        )
    return kv_keep, ch_keep
