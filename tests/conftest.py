"""Shared fixtures: tiny random models of every supported family, built offline from a config."""

from __future__ import annotations

import string

import pytest
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

# The tiny test models are far too small for intra-op parallelism; on a loaded 2-core machine
# torch's worker threads spin and a test runs ten times slower.
torch.set_num_threads(1)

FAMILIES = {
    # Llama-2-like multi-head attention, untied embeddings.
    "llama": (LlamaConfig, LlamaForCausalLM, {"num_key_value_heads": 4, "tie_word_embeddings": False}),
    # Llama-3-like GQA, tied embeddings.
    "llama3": (LlamaConfig, LlamaForCausalLM, {"num_key_value_heads": 2, "tie_word_embeddings": True}),
    "mistral": (MistralConfig, MistralForCausalLM, {"num_key_value_heads": 2, "tie_word_embeddings": False}),
    # Qwen2 has q/k/v biases.
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, {"num_key_value_heads": 2, "tie_word_embeddings": True}),
}


def make_tiny_model(family: str = "llama3", seed: int = 0, **overrides) -> torch.nn.Module:
    """A random model of ``family`` with 4 heads of 8 dims, 4 layers, vocab 96, in eval mode (fp32)."""
    config_cls, model_cls, extra = FAMILIES[family]
    kwargs = {
        "vocab_size": 96,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "head_dim": 8,
        "max_position_embeddings": 128,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        **extra,
        **overrides,
    }
    torch.manual_seed(seed)
    model = model_cls(config_cls(**kwargs)).eval()
    with torch.no_grad():  # random biases, so that slicing them is tested
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.1)
    return model


# ASCII letters, digits, common punctuation, space (Ġ) and newline (Ċ) in byte-level form: a fixed,
# ordered alphabet. ``ByteLevel.alphabet()`` is a set whose order changes between processes, so
# slicing it made the vocabulary (and ids past the models' 96 rows) differ from run to run.
BYTE_LEVEL_ALPHABET = [*sorted(set(string.ascii_letters + string.digits + ".,;:!?'\"-()")), "Ġ", "Ċ"]


def make_tiny_tokenizer(text: str, vocab_size: int = 96) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``text``, at most ``vocab_size`` ids (no BOS added automatically)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=BYTE_LEVEL_ALPHABET,
    )
    tok.train_from_iterator([text], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


SAMPLE_TEXT = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife. However little known the feelings or views of such a man may be on "
    "his first entering a neighbourhood, this truth is so well fixed in the minds of the surrounding "
    "families, that he is considered as the rightful property of some one or other of their daughters. "
) * 8


@pytest.fixture
def tiny_text() -> str:
    return SAMPLE_TEXT


@pytest.fixture(scope="session")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return make_tiny_tokenizer(SAMPLE_TEXT)


@pytest.fixture(params=sorted(FAMILIES))
def family(request) -> str:
    return request.param
