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


def context_length(model: nn.Module) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


def check_seqlen(model: nn.Module, seqlen: int) -> None:
    limit = context_length(model)
    if seqlen <= 1:
        raise PrunebenchError(f"seqlen must be at least 2, got {seqlen}")
    if limit is not None and seqlen > limit:
        raise PrunebenchError(f"seqlen {seqlen} is longer than the model's context of {limit} tokens")


@torch.no_grad()
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
    BlockPruner); the trailing partial window is dropped. With ``add_bos`` each window starts with
    the BOS token followed by ``seqlen - 1`` text tokens. Every window predicts all its tokens but
    the first; the result is the exponential of the mean token NLL.
    """
    check_seqlen(model, seqlen)
    if batch_size <= 0:
        raise PrunebenchError(f"batch size must be positive, got {batch_size}")
    ids = tokenize(tokenizer, text)
    body = seqlen - 1 if add_bos else seqlen
    windows = ids.numel() // body
    if max_windows is not None:
        windows = min(windows, max_windows)
    if windows == 0:
        raise PrunebenchError(f"text has {ids.numel()} tokens, fewer than one window of {seqlen}")
    rows = ids[: windows * body].view(windows, body)
    if add_bos:
        if tokenizer.bos_token_id is None:
            raise PrunebenchError("add_bos requested but the tokenizer has no BOS token")
        rows = torch.cat([torch.full((windows, 1), tokenizer.bos_token_id), rows], dim=1)
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    for start in tqdm(range(0, windows, batch_size), desc="perplexity", disable=not progress, leave=False):
        batch = rows[start : start + batch_size].to(device)
        logits = model(batch, use_cache=False).logits.float()
        nll = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
        )
        total_nll += nll.item()
        total_tokens += batch[:, 1:].numel()
    mean_nll = total_nll / total_tokens
    return {
        "ppl": math.exp(mean_nll),
        "nll": mean_nll,
        "tokens": total_tokens,
        "seqlen": seqlen,
        "windows": windows,
        "bos": add_bos,
    }
