"""Calibration samples: random fixed-length windows of tokenized text, saved so a run can be audited."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from prunebench.errors import PrunebenchError
from prunebench.files import safetensors_header
from prunebench.io import atomic_file

SAMPLES_KEY = "input_ids"
_INTEGER_DTYPES = ("I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64")


def token_ids(tokenizer: PreTrainedTokenizerBase, text: str, add_special_tokens: bool = False) -> list[int]:
    """The token ids of a whole text, with or without the tokenizer's own special tokens.

    ``verbose=False``: the tokenizer's warning that the ids exceed the model's maximum length is false
    here, since the ids are cut into windows before the model sees them.
    """
    return tokenizer(text, add_special_tokens=add_special_tokens, return_attention_mask=False, verbose=False)[
        "input_ids"
    ]


def tokenize(tokenizer: PreTrainedTokenizerBase, text: str) -> torch.Tensor:
    """The whole text as one 1-D tensor of token ids (no special tokens added)."""
    return torch.tensor(token_ids(tokenizer, text), dtype=torch.long)


def check_enough_tokens(have: int, need: int, needs: str, text: str = "calibration text") -> None:
    """The one length rule of every calibration sampler: the text holds at least the ``need`` tokens
    its rows take (one row of ``seqlen`` for random windows and for BlockPruner's cut, ``nsamples x
    seqlen`` for FinerCut's leading rows); exactly ``need`` is enough.

    ``needs`` says what takes them (e.g. "one sample of seqlen=128 tokens"), ``text`` what was tokenized.
    """
    if have < need:
        raise PrunebenchError(
            f"{text} has {have} tokens; {needs} needs at least {need} (give a longer text or a smaller seqlen)"
        )


def calibration_samples(
    tokenizer: PreTrainedTokenizerBase, text: str, nsamples: int, seqlen: int, seed: int
) -> torch.Tensor:
    """``nsamples`` windows of ``seqlen`` tokens at random offsets of the tokenized text, ``[N, T]``.

    The GPTQ/Wanda/FLAP recipe: one random start per sample from a seeded generator, so the same
    seed always gives the same samples. Starts are drawn from ``[0, tokens - seqlen)`` as GPTQ does; a
    text of exactly ``seqlen`` tokens has the one start 0 (:func:`check_enough_tokens`).
    """
    if nsamples <= 0 or seqlen <= 0:
        raise PrunebenchError(f"nsamples and seqlen must be positive, got {nsamples} and {seqlen}")
    ids = tokenize(tokenizer, text)
    check_enough_tokens(ids.numel(), seqlen, f"one sample of seqlen={seqlen} tokens")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, max(ids.numel() - seqlen, 1), (nsamples,), generator=generator)
    return torch.stack([ids[s : s + seqlen] for s in starts.tolist()])


def save_samples(samples: torch.Tensor, path: str | os.PathLike) -> None:
    """Write the samples ``[N, T]`` as a safetensors file holding one tensor ``input_ids``, atomically."""
    with atomic_file(path) as tmp:
        save_file({SAMPLES_KEY: samples.contiguous()}, str(tmp))


def load_samples(path: str | os.PathLike) -> torch.Tensor:
    """Saved calibration samples: a ``[N, T]`` integer tensor ``input_ids`` in a safetensors file.

    Raises ``PrunebenchError`` naming the file when it is missing, not a complete safetensors file,
    or holds no 2-D integer ``input_ids`` tensor (the ids are checked against a vocabulary by
    :func:`check_token_ids`).
    """
    path = Path(path)
    if not path.is_file():
        raise PrunebenchError(f"calibration samples not found: {path}")
    header = safetensors_header(path)
    entry = header.get(SAMPLES_KEY)
    if entry is None:
        found = ", ".join(sorted(header)) or "none"
        raise PrunebenchError(
            f"{path} holds no tensor {SAMPLES_KEY!r} of calibration samples (found: {found})"
        )
    if entry["dtype"] not in _INTEGER_DTYPES or len(entry["shape"]) != 2 or 0 in entry["shape"]:
        raise PrunebenchError(
            f"{path}: {SAMPLES_KEY} must be a non-empty [nsamples, seqlen] tensor of integer token ids, "
            f"got {entry['dtype']} {entry['shape']}"
        )
    return load_file(str(path))[SAMPLES_KEY].long()


def check_token_ids(samples: torch.Tensor, vocab_size: int, source: str) -> None:
    """Every id of ``samples`` lies in ``[0, vocab_size)``; ``PrunebenchError`` naming ``source`` if not."""
    low, high = int(samples.min()), int(samples.max())
    if low < 0 or high >= vocab_size:
        raise PrunebenchError(
            f"{source}: token ids range from {low} to {high}, outside the model's vocabulary of {vocab_size} "
            "(samples made with another tokenizer?)"
        )
