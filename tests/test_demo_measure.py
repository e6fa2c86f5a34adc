"""Perplexity protocol, unigram baseline, atomic writes and the model-card writer of the demo package."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from prunebench.demo.atomic import atomic_path, read_text, write_text
from prunebench.demo.card import render_card, write_card
from prunebench.demo.perplexity import perplexity, unigram_perplexity, windows
from prunebench.errors import PrunebenchError


class UniformLM(torch.nn.Module):
    """Predicts every token of a vocabulary of size V with probability 1/V."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.device = torch.device("cpu")

    def forward(self, input_ids):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab))


def test_windows_drop_the_tail_and_reject_short_text():
    ids = torch.arange(10)
    assert windows(ids, 4).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert windows(ids, 4, max_windows=1).shape == (1, 4)
    with pytest.raises(PrunebenchError, match="fewer than one window"):
        windows(ids, 11)


def test_uniform_model_has_perplexity_equal_to_the_vocabulary():
    result = perplexity(UniformLM(50), torch.randint(0, 50, (100,)), seqlen=8)
    assert result["ppl"] == pytest.approx(50) and result["windows"] == 12 and result["tokens"] == 12 * 7


def test_unigram_perplexity_with_add_one_smoothing():
    assert unigram_perplexity([0, 1, 2, 3], [0, 1], vocab_size=4) == pytest.approx(4)
    # counts 3 and 1 (+1 each), denominator 4 + 2 -> p(0) = 4/6
    assert unigram_perplexity([0, 0, 0, 1], [0], vocab_size=2) == pytest.approx(6 / 4)


def test_atomic_write_leaves_nothing_on_failure_and_gzip_is_reproducible(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    write_text(tmp_path / "a.txt.gz", "héllo\n")
    first = (tmp_path / "a.txt.gz").read_bytes()
    write_text(tmp_path / "a.txt.gz", "héllo\n")
    assert (tmp_path / "a.txt.gz").read_bytes() == first and read_text(tmp_path / "a.txt.gz") == "héllo\n"


def card_inputs() -> tuple[dict, dict, dict]:
    config = {
        "num_hidden_layers": 12,
        "hidden_size": 256,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 32,
        "intermediate_size": 512,
        "vocab_size": 4096,
        "max_position_embeddings": 1024,
        "eos_token_id": 0,
    }
    cfg = {
        "seqlen": 256,
        "batch_size": 8,
        "max_tokens": 10**7,
        "beta2": 0.95,
        "weight_decay": 0.1,
        "lr": 1e-3,
    }
    cfg |= {"warmup_steps": 50, "min_lr_rate": 0.02, "grad_clip": 1.0, "seed": 0}
    training = {
        "config": cfg,
        "parameters": 8_132_864,
        "train_tokens_in_split": 859_830,
        "steps_run": 900,
        "tokens_seen": 900 * 2048,
        "stopped_by_clock": False,
        "decay_start": 700,
        "end_step": 900,
        "exported_step": 900,
        "exported_tokens_seen": 900 * 2048,
        "elapsed_s": 3600.0,
        "torch": "2.x",
        "threads": 1,
        "command": "python workflow/scripts/train_demo_model.py --max-tokens 10000000 --minutes 60",
    }
    ppl = {"ppl": 80.0, "windows": 230}
    task = {
        "acc": 0.5,
        "acc_stderr": 0.02,
        "acc_norm": 0.45,
        "acc_norm_stderr": 0.02,
        "n": 500,
        "chance": 0.25,
    }
    metrics = {
        "perplexity": {
            "protocol": "windows",
            "validation": ppl,
            "test": ppl,
            "test_prefix": {"ppl": 81.0, "windows": 16},
            "unigram_test_ppl": 600.0,
            "unigram_protocol": "add-one",
        },
        "zero_shot": {"lm_eval_version": "0.4.13", "tasks": {"demo_cloze": task}},
    }
    return config, training, metrics


def test_card_reports_the_recorded_numbers_and_the_replay_command():
    text = render_card(*card_inputs(), size_bytes=16 * 2**20)
    assert "--max-tokens 1843200 --decay-start 700" in text
    assert "| test | 230 | 80.00 |" in text and "| 600.00 |" in text
    assert "| demo_cloze | 500 | 0.500 ± 0.020 | 0.450 ± 0.020 | 0.25 | +0.250 | +12.5 |" in text
    assert f"{900 * 2048 / 3600:.0f} tokens/s" in text and "(4 × 128)" in text


def test_write_card_needs_the_recorded_files(tmp_path):
    config, training, _ = card_inputs()
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "training.json").write_text(json.dumps(training))
    with pytest.raises(PrunebenchError, match=r"metrics\.json not found"):
        write_card(tmp_path)
