"""Token-level perplexity over non-overlapping windows of the concatenated text."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from prunebench.data.calibration import tokenize
from prunebench.errors import PrunebenchError
from prunebench.models.context import check_context


def check_options(seqlen: int, batch_size: int, max_windows: int | None) -> None:
    """The options' own ranges, before anything is read: a window holds at least 2 tokens, a batch at
    least one window, and ``max_windows`` (``None``: every window) is at least 1."""
    if seqlen <= 1:
        raise PrunebenchError(f"seqlen must be at least 2, got {seqlen}")
    if batch_size <= 0:
        raise PrunebenchError(f"batch size must be positive, got {batch_size}")
    if max_windows is not None and max_windows < 1:
        raise PrunebenchError(
            f"max_windows must be at least 1 (or left out: every window), got {max_windows}"
        )


def check_seqlen(source: nn.Module | str, seqlen: int) -> None:
    """A window must hold at least 2 tokens and fit in the context of ``source`` (a model or a path)."""
    if seqlen <= 1:
        raise PrunebenchError(f"seqlen must be at least 2, got {seqlen}")
    check_context(source, seqlen, "perplexity seqlen")


def windows(ids: torch.Tensor, length: int, max_windows: int | None = None) -> torch.Tensor:
    """The non-overlapping ``(n, length)`` windows of a 1-D id tensor, tail dropped (optionally the first n)."""
    n = ids.numel() // length
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise PrunebenchError(f"text has {ids.numel()} tokens, fewer than one window of {length}")
    return ids[: n * length].view(n, length)


@torch.no_grad()
def window_nll(
    model: nn.Module, rows: torch.Tensor, batch_size: int = 8, progress: bool = False
) -> torch.Tensor:
    """Summed next-token NLL (nats, float64) of each row of ``rows`` ``[n, length]``: shape ``[n]``."""
    device = next(model.parameters()).device
    sums = []
    for start in tqdm(
        range(0, rows.shape[0], batch_size), desc="perplexity", disable=not progress, leave=False
    ):
        batch = rows[start : start + batch_size].to(device)
        logits = model(batch, use_cache=False).logits.float()
        nll = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="none"
        )
        sums.append(nll.view(batch.shape[0], -1).double().sum(dim=1).cpu())
    return torch.cat(sums) if sums else torch.zeros(0, dtype=torch.float64)


def mean_nll(
    model: nn.Module, rows: torch.Tensor, batch_size: int = 8, progress: bool = False
) -> tuple[float, int]:
    """Mean next-token NLL (nats) over every predicted position of ``rows`` and the number of them."""
    tokens = rows.shape[0] * (rows.shape[1] - 1)
    return float(window_nll(model, rows, batch_size, progress).sum()) / tokens, tokens


def perplexity(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    seqlen: int,
    batch_size: int = 8,
    add_bos: bool = False,
    max_windows: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Perplexity of ``model`` on ``text`` cut into non-overlapping windows of ``seqlen`` tokens.

    The text is tokenized once and concatenated (the WikiText-2 protocol of GPTQ, SparseGPT, SLEB,
    BlockPruner, LLM-Pruner, FLAP, Shortened-LLaMA); the trailing partial window is dropped. With
    ``add_bos`` each window starts with the BOS token followed by ``seqlen - 1`` text tokens. Every
    window predicts all its tokens but the first; the result is the exponential of the mean token NLL.
    ``window_nll`` holds each window's mean NLL (for paired comparisons between models on the same
    windows) and ``nll_se`` the standard error of the mean NLL over windows (``None`` for one window).
    """
    check_options(seqlen, batch_size, max_windows)
    check_seqlen(model, seqlen)
    if add_bos and tokenizer.bos_token_id is None:
        raise PrunebenchError("add_bos requested but the tokenizer has no BOS token")
    rows = windows(tokenize(tokenizer, text), seqlen - 1 if add_bos else seqlen, max_windows)
    if add_bos:
        rows = torch.cat([torch.full((rows.shape[0], 1), tokenizer.bos_token_id), rows], dim=1)
    per_window = window_nll(model, rows, batch_size, progress) / (rows.shape[1] - 1)
    nll = float(per_window.mean())
    if not math.isfinite(nll):
        raise PrunebenchError(
            f"the mean token NLL is {nll}: the model's outputs are not finite (perplexity undefined)"
        )
    return {
        "ppl": math.exp(nll),
        "nll": nll,
        "nll_se": float(per_window.std() / math.sqrt(len(per_window))) if len(per_window) > 1 else None,
        "tokens": rows.shape[0] * (rows.shape[1] - 1),
        "seqlen": seqlen,
        "windows": rows.shape[0],
        "bos": add_bos,
        "window_nll": per_window.tolist(),
    }
