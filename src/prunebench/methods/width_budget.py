"""Width baselines: how many KV groups and channels every layer keeps for a uniform decoder ratio."""

from __future__ import annotations

from prunebench.errors import PrunebenchError
from prunebench.models.adapter import ModelAdapter
from prunebench.models.counting import decoder_params, kv_group_params, mlp_channel_params


def uniform_keep_counts(
    adapter: ModelAdapter, target_ratio: float, prune_heads: bool = True, prune_channels: bool = True
) -> tuple[int, int]:
    """Per-layer (KV groups kept, MLP channels kept) whose decoder ratio is closest to ``target_ratio``.

    The same fraction is removed from heads and channels: the KV-group count is rounded (GQA makes
    it coarse) and the channel count then absorbs the rounding error so the total lands close.
    A ratio that cannot be reached while keeping at least one group and one channel is an error.
    """
    if not 0 <= target_ratio < 1:
        raise PrunebenchError(f"ratio must be in [0, 1), got {target_ratio}")
    if not (prune_heads or prune_channels):
        raise PrunebenchError("at least one of heads or channels must be pruned")
    n_kv, n_ch, layers = adapter.num_kv_heads, adapter.intermediate_size, adapter.num_layers
    group_cost = sum(kv_group_params(adapter, i) for i in range(layers))
    channel_cost = sum(mlp_channel_params(adapter, i) for i in range(layers))
    budget = target_ratio * decoder_params(adapter.model)
    kv_keep = n_kv
    if prune_heads:
        kv_keep = max(1, round(n_kv * (1 - target_ratio)))
    remaining = budget - (n_kv - kv_keep) * group_cost
    ch_keep = n_ch
    if prune_channels:
        ch_keep = min(n_ch, max(1, n_ch - round(remaining / channel_cost)))
    elif prune_heads:
        kv_keep = min(n_kv, max(1, n_kv - round(budget / group_cost)))
    achieved = ((n_kv - kv_keep) * group_cost + (n_ch - ch_keep) * channel_cost) / decoder_params(
        adapter.model
    )
    if target_ratio > 0 and abs(achieved - target_ratio) > 0.02:
        raise PrunebenchError(
            f"a uniform split can reach a decoder ratio of {achieved:.3f}, not {target_ratio} "
            f"({n_kv} KV groups of {adapter.group_size} heads, {n_ch} channels per layer)"
        )
    return kv_keep, ch_keep
