"""Text loading, calibration sampling and perplexity against a direct computation."""

from __future__ import annotations

import gzip
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_model

from prunebench.data import calibration_samples, load_samples, load_text, save_samples, tokenize
from prunebench.errors import PrunebenchError
from prunebench.evaluation.perplexity import mean_nll, perplexity, windows


def test_load_text_from_file_dir_and_gz(tmp_path, tiny_text):
    (tmp_path / "a.txt").write_text(tiny_text)
    (tmp_path / "splits").mkdir()
    with gzip.open(tmp_path / "splits" / "test.txt.gz", "wt") as fh:
        fh.write("held out")
    assert load_text(str(tmp_path / "a.txt")) == tiny_text
    assert load_text(str(tmp_path / "splits"), "test") == "held out"
    with pytest.raises(PrunebenchError, match=r"no validation\.txt"):
        load_text(str(tmp_path / "splits"), "validation")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(PrunebenchError, match="empty"):
        load_text(str(tmp_path / "empty.txt"))
    with pytest.raises(PrunebenchError, match="neither a local file"):
        load_text("no-such-dataset")


def test_calibration_is_seeded_and_saved(tmp_path, tiny_tokenizer, tiny_text):
    a = calibration_samples(tiny_tokenizer, tiny_text, 4, 16, seed=3)
    b = calibration_samples(tiny_tokenizer, tiny_text, 4, 16, seed=3)
    c = calibration_samples(tiny_tokenizer, tiny_text, 4, 16, seed=4)
    assert a.shape == (4, 16) and torch.equal(a, b) and not torch.equal(a, c)
    ids = tokenize(tiny_tokenizer, tiny_text)
    row = a[0].tolist()
    assert any(ids[i : i + 16].tolist() == row for i in range(ids.numel() - 15))
    save_samples(a, tmp_path / "s.safetensors")
    assert torch.equal(load_samples(tmp_path / "s.safetensors"), a)
    with pytest.raises(
        PrunebenchError, match=r"has \d+ tokens; one sample of seqlen=64 tokens needs at least 64"
    ):
        calibration_samples(tiny_tokenizer, "too short", 1, 64, seed=0)


def test_perplexity_equals_direct_computation(tiny_tokenizer, tiny_text):
    model = make_tiny_model("llama3", vocab_size=len(tiny_tokenizer))
    seqlen = 16
    tiny_text = tiny_text[: len(tiny_text) // 4]  # a few windows suffice; the direct loop is one call each
    result = perplexity(model, tiny_tokenizer, tiny_text, seqlen, batch_size=3, progress=False)
    ids = tokenize(tiny_tokenizer, tiny_text)
    windows = ids.numel() // seqlen
    nll, count = 0.0, 0
    with torch.no_grad():
        for w in range(windows):
            x = ids[w * seqlen : (w + 1) * seqlen].unsqueeze(0)
            logits = model(x).logits[0, :-1]
            nll += F.cross_entropy(logits, x[0, 1:], reduction="sum").item()
            count += seqlen - 1
    assert result["tokens"] == count and result["windows"] == windows
    assert result["ppl"] == pytest.approx(math.exp(nll / count), rel=1e-5)
    assert result["bos"] is False and result["seqlen"] == seqlen


def test_perplexity_with_bos_and_bad_seqlen(tiny_tokenizer, tiny_text):
    model = make_tiny_model("llama3", vocab_size=len(tiny_tokenizer))
    with_bos = perplexity(model, tiny_tokenizer, tiny_text, 16, add_bos=True, max_windows=2, progress=False)
    assert with_bos["bos"] is True and with_bos["windows"] == 2 and with_bos["tokens"] == 30
    with pytest.raises(PrunebenchError, match="at least 2"):
        perplexity(model, tiny_tokenizer, tiny_text, 1)
    with pytest.raises(
        PrunebenchError, match="perplexity seqlen 4096 exceeds the model's context of 128 tokens"
    ):
        perplexity(model, tiny_tokenizer, tiny_text, 4096)


class UniformLM(torch.nn.Module):
    """Predicts every token of a vocabulary of size V with probability 1/V."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the model a device

    def forward(self, input_ids, use_cache=False):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab))


def test_windows_drop_the_tail_and_reject_short_text():
    ids = torch.arange(10)
    assert windows(ids, 4).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert windows(ids, 4, max_windows=1).shape == (1, 4)
    with pytest.raises(PrunebenchError, match="fewer than one window"):
        windows(ids, 11)


def test_uniform_model_has_perplexity_equal_to_the_vocabulary():
    rows = windows(torch.randint(0, 50, (100,)), 8)
    nll, tokens = mean_nll(UniformLM(50), rows, batch_size=5)
    assert math.exp(nll) == pytest.approx(50) and rows.shape[0] == 12 and tokens == 12 * 7
