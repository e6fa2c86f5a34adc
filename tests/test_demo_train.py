"""The demo training loop on a tiny model: it learns, it is deterministic, it resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig

from prunebench.demo import train as train_mod
from prunebench.demo.corpus import load_split
from prunebench.demo.model import load_model
from prunebench.demo.tokenizer import load_tokenizer
from prunebench.demo.train import TrainConfig, WindowSampler, train, wsd_factor
from prunebench.errors import PrunebenchError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(ROOT / "resources/demo/model")


@pytest.fixture(scope="module")
def texts():
    return load_split(ROOT / "resources/demo/corpus", "train")[:40000], load_split(
        ROOT / "resources/demo/corpus", "validation"
    )[:6000]


def tiny(tok) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        tie_word_embeddings=True,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )


CFG = TrainConfig(max_tokens=24 * 4 * 32, seqlen=32, batch_size=4, lr=3e-3, warmup_steps=4, eval_every=12)


def test_training_learns_and_writes_a_loadable_model(tmp_path, tok, texts):
    summary = train(*texts, tok, CFG, tmp_path / "model", tmp_path / "ckpt.pt", "cmd", model_config=tiny(tok))
    history = summary["validation_history"]
    assert [h["step"] for h in history] == [12, 24]
    assert history[-1]["val_nll"] < history[0]["val_nll"] < torch.log(torch.tensor(len(tok))).item()
    assert summary["tokens_seen"] == 24 * 4 * 32 and summary["exported_step"] == 24
    assert json.loads((tmp_path / "model/training.json").read_text())["command"] == "cmd"
    assert load_model(tmp_path / "model").config.num_hidden_layers == 2
    assert load_tokenizer(tmp_path / "model")("Anne")["input_ids"] == tok("Anne")["input_ids"]


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, tok, texts, monkeypatch):
    train(*texts, tok, CFG, tmp_path / "a", tmp_path / "a.pt", model_config=tiny(tok))

    real = train_mod._checkpoint

    def crash_after_first(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "_checkpoint", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        train(*texts, tok, CFG, tmp_path / "b", tmp_path / "b.pt", model_config=tiny(tok))
    monkeypatch.setattr(train_mod, "_checkpoint", real)
    summary = train(*texts, tok, CFG, tmp_path / "b", tmp_path / "b.pt", model_config=tiny(tok))
    assert summary["steps_run"] == 24
    a, b = load_model(tmp_path / "a").state_dict(), load_model(tmp_path / "b").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_from_other_settings_is_refused(tmp_path, tok, texts):
    train(*texts, tok, CFG, tmp_path / "m", tmp_path / "c.pt", model_config=tiny(tok))
    other = TrainConfig(**{**CFG.__dict__, "lr": 1e-3})
    with pytest.raises(PrunebenchError, match="other settings"):
        train(*texts, tok, other, tmp_path / "m", tmp_path / "c.pt", model_config=tiny(tok))


def test_bad_settings_are_rejected_before_work():
    with pytest.raises(PrunebenchError, match="warmup_steps"):
        TrainConfig(max_tokens=1000, warmup_steps=50).check()
    with pytest.raises(PrunebenchError, match="minutes"):
        TrainConfig(max_tokens=10**7, minutes=0).check()


def test_wsd_schedule_shape():
    cfg = TrainConfig(max_tokens=100 * 8 * 256, warmup_steps=10, min_lr_rate=0.1)
    assert wsd_factor(0, cfg, None, 100) == pytest.approx(0.1)
    assert wsd_factor(50, cfg, None, 100) == 1.0
    assert wsd_factor(80, cfg, 80, 100) == 1.0
    assert wsd_factor(90, cfg, 80, 100) == pytest.approx(0.55)
    assert wsd_factor(100, cfg, 80, 100) == pytest.approx(0.1)
    assert cfg.planned_decay_start == 80


def test_window_sampler_covers_each_epoch_once_and_is_deterministic():
    a, b = WindowSampler(10_000, 256, seed=1), WindowSampler(10_000, 256, seed=1)
    epoch = a._epoch(0)
    assert len(set(epoch.tolist())) == len(epoch) and int(epoch.max()) + 256 <= 10_000
    batches = torch.cat([a.starts(i * 7, 7) for i in range(20)])
    assert torch.equal(batches, b.starts(0, 140))
    assert not torch.equal(a._epoch(0)[:10], WindowSampler(10_000, 256, seed=2)._epoch(0)[:10])


def test_saved_model_is_float16_on_disk_and_loads_as_float32_by_default(tmp_path, tok):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    from prunebench.demo.model import save_model

    save_model(LlamaForCausalLM(tiny(tok)), tok, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "float32"
    from safetensors import safe_open

    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())  # noqa: SIM118
    assert next(AutoModelForCausalLM.from_pretrained(tmp_path).parameters()).dtype == torch.float32
