"""Calibration samples: random fixed-length windows of tokenized text, saved so a run can be audited."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from prunebench.errors import PrunebenchError

SAMPLES_KEY = "input_ids"


def tokenize(tokenizer: PreTrainedTokenizerBase, text: str) -> torch.Tensor:
    """The whole text as one 1-D tensor of token ids (no special tokens added)."""
    ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def calibration_samples(
    tokenizer: PreTrainedTokenizerBase, text: str, nsamples: int, seqlen: int, seed: int
) -> torch.Tensor:
    """``nsamples`` windows of ``seqlen`` tokens at random offsets of the tokenized text, ``[N, T]``.

    The GPTQ/Wanda/FLAP recipe: one random start per sample from a seeded generator, so the same
    seed always gives the same samples.
    """
    if nsamples <= 0 or seqlen <= 0:
        raise PrunebenchError(f"nsamples and seqlen must be positive, got {nsamples} and {seqlen}")
    ids = tokenize(tokenizer, text)
    if ids.numel() <= seqlen:
        raise PrunebenchError(
            f"calibration text has {ids.numel()} tokens, shorter than one sample of {seqlen} tokens"
        )
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - seqlen, (nsamples,), generator=generator)
    return torch.stack([ids[s : s + seqlen] for s in starts.tolist()])


def save_samples(samples: torch.Tensor, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({SAMPLES_KEY: samples.contiguous()}, str(tmp))
    os.replace(tmp, path)


def load_samples(path: str | os.PathLike) -> torch.Tensor:
    path = Path(path)
    if not path.is_file():
        raise PrunebenchError(f"calibration samples not found: {path}")
    return load_file(str(path))[SAMPLES_KEY]
