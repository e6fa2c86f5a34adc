"""The one check of a requested length in tokens against the model's context window."""

from __future__ import annotations

import os

from torch import nn
from transformers import PretrainedConfig

from prunebench.errors import PrunebenchError
from prunebench.models.checkpoint import load_config


def context_length(source: nn.Module | PretrainedConfig | str | os.PathLike) -> int | None:
    """The model's context window in tokens (``max_position_embeddings``); ``None`` if it declares none.

    ``source`` is a loaded model, its config, or a model directory / Hub id (only the config is read).
    """
    if isinstance(source, nn.Module):
        config = source.config
    elif isinstance(source, PretrainedConfig):
        config = source
    else:
        config = load_config(source)
    return getattr(config, "max_position_embeddings", None)


def check_context(source: nn.Module | PretrainedConfig | str | os.PathLike, length: int, what: str) -> None:
    """Raise ``PrunebenchError`` when ``length`` tokens (``what``, e.g. "recovery seqlen") exceed the context.

    Called by every entry point that takes a length (calibration, recovery, perplexity windows, latency
    prompt + new tokens), before the weights are loaded when it is given a path.
    """
    limit = context_length(source)
    if limit is not None and length > limit:
        of = f" of {source}" if isinstance(source, str | os.PathLike) else ""
        raise PrunebenchError(
            f"{what} {length} exceeds the model's context of {limit} tokens (max_position_embeddings{of})"
        )
