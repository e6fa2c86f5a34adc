"""The demo tokenizer: byte-level BPE that adds no BOS, with bos/eos defined."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunebench.demo.corpus import load_split
from prunebench.demo.tokenizer import SPECIAL, VOCAB_SIZE, load_tokenizer, train_tokenizer
from prunebench.errors import PrunebenchError

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "resources/demo/model"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(MODEL)


def test_shipped_tokenizer_adds_no_bos_or_eos(tok):
    ids = tok("Anne Elliot smiled.")["input_ids"]
    assert ids == tok("Anne Elliot smiled.", add_special_tokens=False)["input_ids"]
    assert tok.bos_token_id not in ids and tok.eos_token_id not in ids
    assert tok.decode(ids) == "Anne Elliot smiled."


def test_shipped_tokenizer_defines_bos_eos_and_size(tok):
    assert tok.bos_token == tok.eos_token == tok.pad_token == SPECIAL
    assert len(tok) == VOCAB_SIZE
    assert tok.convert_tokens_to_ids(SPECIAL) == tok.eos_token_id


def test_round_trip_on_held_out_text(tok):
    text = load_split(ROOT / "resources/demo/corpus", "test")[:5000]
    assert tok.decode(tok(text)["input_ids"]) == text


def test_training_is_deterministic_and_respects_vocab_size():
    text = "It is a truth universally acknowledged, that a single man in possession of a fortune.\n" * 20
    a, b = train_tokenizer(text, vocab_size=300), train_tokenizer(text, vocab_size=300)
    assert a.get_vocab() == b.get_vocab()
    assert len(a) <= 300 and a("truth")["input_ids"] == b("truth")["input_ids"]


def test_bad_input_is_rejected(tmp_path):
    with pytest.raises(PrunebenchError, match="empty text"):
        train_tokenizer("  \n")
    with pytest.raises(PrunebenchError, match="vocab_size"):
        train_tokenizer("abc", vocab_size=100)
    with pytest.raises(PrunebenchError, match=r"no tokenizer\.json"):
        load_tokenizer(tmp_path)
