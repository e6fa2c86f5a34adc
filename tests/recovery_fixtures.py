"""Tiny models, tokenizer and corpus for the recovery tests (no Hub, a few seconds at most)."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SUBJECTS = ["the cat", "the dog", "a bird", "my friend", "the old man", "a child"]
VERBS = ["sees", "likes", "finds", "follows", "watches"]
OBJECTS = ["the ball", "a tree", "the river", "an apple", "the house", "a small boat"]


@contextmanager
def one_thread() -> Iterator[None]:
    """Tiny models run far faster on one thread on a shared, loaded CPU (no OpenMP contention)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_text(n_sentences: int, seed: int) -> str:
    """Sentences from a small grammar: learnable structure, so the loss can fall quickly."""
    rng = random.Random(seed)
    return " ".join(
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} ." for _ in range(n_sentences)
    )


def make_tokenizer() -> PreTrainedTokenizerFast:
    words = sorted({w for phrase in SUBJECTS + VERBS + OBJECTS for w in phrase.split()} | {"."})
    specials = ["<unk>", "<pad>", "<s>", "</s>"]
    extra = ["instruction", "response", "input", "below", "is", "an", "that", "describes", "task"]
    vocab = {tok: i for i, tok in enumerate(specials + words + [w for w in extra if w not in words])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


def make_model(vocab_size: int, layers: int = 2, hidden: int = 32, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def write_model(path: str, layers: int = 2, model=None) -> str:
    """A tiny Llama + tokenizer saved with core's save_pretrained (what `prunebench prune` writes)."""
    from prunebench.models import save_pretrained

    tokenizer = make_tokenizer()
    model = model if model is not None else make_model(len(tokenizer), layers=layers)
    save_pretrained(model, path, tokenizer=tokenizer)
    return path


def write_corpus(path: str) -> str:
    """A corpus directory with train / validation / test splits."""
    os.makedirs(path, exist_ok=True)
    for split, (n, seed) in {"train": (1200, 1), "validation": (200, 2), "test": (200, 3)}.items():
        with open(os.path.join(path, f"{split}.txt"), "w", encoding="utf-8") as fh:
            fh.write(make_text(n, seed))
    return path
