"""The shipped demo model: its shape suits every pruning method, and it still scores the perplexity
that its model card reports (re-measured on a fixed prefix of the test split)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prunebench.demo.evaluate import PREFIX_WINDOWS, SEQLEN, split_ids
from prunebench.demo.model import load_model
from prunebench.demo.perplexity import perplexity
from prunebench.demo.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "resources/demo/model"


@pytest.fixture(scope="module")
def metrics():
    return json.loads((MODEL / "metrics.json").read_text())


@pytest.fixture(scope="module")
def model():
    return load_model(MODEL)


def test_shape_gives_every_method_something_to_do(model):
    c = model.config
    assert c.num_hidden_layers >= 12
    assert c.num_key_value_heads >= 4 and c.num_attention_heads == 2 * c.num_key_value_heads
    assert c.head_dim >= 32 and c.intermediate_size % 128 == 0
    assert 5e6 <= sum(p.numel() for p in model.parameters()) <= 20e6
    assert (MODEL / "model.safetensors").stat().st_size <= 30 * 2**20
    assert next(model.parameters()).dtype == torch.float32


def test_test_prefix_perplexity_matches_the_model_card(model, metrics):
    torch.set_num_threads(2)
    ids = split_ids(ROOT / "resources/demo/corpus", "test", load_tokenizer(MODEL))
    measured = perplexity(model, ids, SEQLEN, max_windows=PREFIX_WINDOWS)
    recorded = metrics["perplexity"]["test_prefix"]
    assert measured["windows"] == recorded["windows"] == PREFIX_WINDOWS
    assert measured["ppl"] == pytest.approx(recorded["ppl"], rel=0.05)


def test_model_is_far_better_than_unigram(metrics):
    ppl = metrics["perplexity"]
    assert ppl["test"]["ppl"] < 0.5 * ppl["unigram_test_ppl"]
