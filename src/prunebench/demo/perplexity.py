"""Perplexity of the demo model: non-overlapping windows of the concatenated split, no BOS.

The protocol of LLM-Pruner / FLAP / Shortened-LLaMA's WikiText-2 evaluation: tokenize the whole split,
cut it into ``len // seqlen`` windows of ``seqlen`` tokens (the tail is dropped), and average the
next-token negative log-likelihood over every predicted token of every window.
"""

from __future__ import annotations

import math
from collections import Counter

import torch
from transformers import PreTrainedModel

from prunebench.errors import PrunebenchError


def windows(ids: torch.Tensor, seqlen: int, max_windows: int | None = None) -> torch.Tensor:
    """The non-overlapping ``(n, seqlen)`` windows of a 1-D id tensor (optionally only the first n)."""
    n = ids.numel() // seqlen
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise PrunebenchError(f"text has {ids.numel()} tokens, fewer than one window of {seqlen}")
    return ids[: n * seqlen].view(n, seqlen)


@torch.no_grad()
def mean_nll(model: PreTrainedModel, batches: torch.Tensor, batch_size: int = 8) -> tuple[float, int]:
    """Mean next-token NLL (nats) over all predicted positions of ``batches`` and the number of them."""
    total, count = 0.0, 0
    for start in range(0, batches.shape[0], batch_size):
        chunk = batches[start : start + batch_size].to(model.device)
        logits = model(input_ids=chunk).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1), reduction="sum"
        )
        total += nll.item()
        count += chunk[:, 1:].numel()
    return total / count, count


def perplexity(
    model: PreTrainedModel, ids: torch.Tensor, seqlen: int = 256, max_windows: int | None = None
) -> dict[str, float | int]:
    """Windowed perplexity of ``ids``; returns ppl, mean NLL, windows and predicted-token count."""
    batches = windows(ids, seqlen, max_windows)
    nll, count = mean_nll(model, batches)
    return {"ppl": math.exp(nll), "nll": nll, "windows": batches.shape[0], "tokens": count, "seqlen": seqlen}


def unigram_perplexity(train_ids: list[int], test_ids: list[int], vocab_size: int) -> float:
    """Perplexity of a unigram model (train counts, add-one smoothing over the vocabulary) on test ids."""
    counts = Counter(train_ids)
    denom = len(train_ids) + vocab_size
    nll = -sum(math.log((counts[t] + 1) / denom) for t in test_ids) / len(test_ids)
    return math.exp(nll)
