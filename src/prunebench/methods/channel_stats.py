"""Per-channel statistics of a linear layer's input over calibration samples (FLAP and Wanda-sp).

Both methods score the *input channels* of ``o_proj`` and ``down_proj``. The official FLAP code
feeds one calibration sample (``T`` tokens) at a time and keeps running accumulators; we process a
batch of samples at once but reproduce the per-sample recursions exactly through their closed forms
(derived from the official update rules, see the method docstrings), accumulating in float64 on the
activations' device (results are returned on the CPU).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class InputStats:
    """Running statistics of one linear layer's input, one calibration sample = one row of a batch.

    After ``N`` samples with per-sample token matrices ``x_n`` (``T × C``):

    - ``mean()``: ``μ_N = (1/N) Σ_n mean_t x_{n,t}`` — FLAP's ``baseline_inp`` (its running mean).
    - ``fluctuation()``: FLAP's ``fluc_inp`` as coded. Its update uses the *already updated* mean
      twice (the "old mean" is an alias of the tensor updated in place) and starts from zero after
      the first sample, which telescopes to
      ``F_N = 1/(N−1) · Σ_{n=2..N} ((n−1)/n) · Σ_t (x_{n,t} − μ_n)²``.
    - ``mean_sq_norm()``: ``ρ = (1/N) Σ_n Σ_t x_{n,t}²`` — Wanda's ``scaler_row`` and FLAP's
      ``scaler_inp`` (used by the WIFN metric).
    """

    def __init__(self, channels: int) -> None:
        self.count = 0
        self._channels = channels
        self._sum_means = self._fluct = self._sq_norm = torch.zeros(channels, dtype=torch.float64)

    def update(self, x: torch.Tensor) -> None:
        """Add a batch ``x`` of shape ``[B, T, C]`` (B samples of T tokens), in sample order."""
        x = x.detach().to(torch.float64)
        if self.count == 0:
            self._sum_means, self._fluct, self._sq_norm = (
                torch.zeros(self._channels, dtype=torch.float64, device=x.device) for _ in range(3)
            )
        batch = x.shape[0]
        means = x.mean(dim=1)
        index = torch.arange(self.count + 1, self.count + batch + 1, dtype=torch.float64, device=x.device)
        running = (self._sum_means + means.cumsum(dim=0)) / index[:, None]
        deviation = (x - running[:, None, :]).pow(2).sum(dim=1)
        self._fluct += (((index - 1) / index)[:, None] * deviation).sum(dim=0)
        self._sq_norm += x.pow(2).sum(dim=(0, 1))
        self._sum_means += means.sum(dim=0)
        self.count += batch

    def mean(self) -> torch.Tensor:
        return self._sum_means.cpu() / self.count

    def fluctuation(self) -> torch.Tensor:
        return self._fluct.cpu() / (self.count - 1)

    def mean_sq_norm(self) -> torch.Tensor:
        return self._sq_norm.cpu() / self.count


def attach(module: nn.Linear, stats: InputStats) -> torch.utils.hooks.RemovableHandle:
    """Feed every input of ``module`` to ``stats`` (a forward pre-hook); returns the handle to remove."""

    def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        stats.update(args[0])

    return module.register_forward_pre_hook(hook)


#: Input channels per block in :func:`by_columns` (a 4096-row block of float64 is 32 MiB).
COLUMN_BLOCK = 1024


def by_columns(
    weight: torch.Tensor, fn: Callable[[torch.Tensor, slice], torch.Tensor], block: int = COLUMN_BLOCK
) -> torch.Tensor:
    """``fn(w, cols)`` over blocks of ``block`` input channels (columns) of ``weight`` (``[out, in]``),
    concatenated: ``[in]`` on the CPU.

    ``w`` is a contiguous float64 CPU copy of ``weight[:, cols]``, so a per-column metric never holds a
    float64 copy of the whole matrix (360 MiB for a 7B model's ``down_proj``). ``block`` is a power of
    two, so the blocks split the columns where torch's vectorised reductions group them anyway and each
    column's reduction over the rows is the one of the whole matrix (a test checks it bit for bit; a
    block of 700 columns does not match).
    """
    width = weight.shape[1]
    parts = []
    for start in range(0, width, block):
        cols = slice(start, min(start + block, width))
        parts.append(fn(weight.detach()[:, cols].to("cpu", torch.float64).contiguous(), cols))
    return torch.cat(parts)


def group_channels(channel_scores: torch.Tensor, group_width: int) -> torch.Tensor:
    """Reshape ``[..., G·group_width]`` o_proj input-channel scores to ``[..., G, group_width]``.

    A KV group (one KV head and its ``g`` query heads) owns ``g·head_dim`` consecutive o_proj input
    channels, because query head ``h`` uses KV head ``h // g`` in Hugging Face GQA attention.
    """
    return channel_scores.reshape(*channel_scores.shape[:-1], -1, group_width)
