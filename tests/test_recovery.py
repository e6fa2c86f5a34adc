"""Recovery training on a tiny Llama: loss falls, budgets are respected, LoRA merges exactly."""

from __future__ import annotations

import csv
import json
import math
import os

import pytest
import torch
from recovery_fixtures import make_model, make_tokenizer, one_thread, write_corpus, write_model

from prunebench.models import load_pretrained
from prunebench.recovery.config import Budget, RecoveryConfig
from prunebench.recovery.lora import attach_lora, merge_lora
from prunebench.recovery.run import recover

FAST = RecoveryConfig(batch_size=4, seqlen=16, lr=3e-3, save_every=5, val_batches=4)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("recovery")
    return write_model(str(root / "model")), write_corpus(str(root / "corpus")), root


def read_log(out: str) -> list[dict]:
    with open(os.path.join(out, "train_log.csv"), encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("variant", ["lora", "cpt"])
def test_loss_decreases_and_output_loads(setup, variant):
    model_dir, corpus, root = setup
    out = str(root / f"out_{variant}")
    summary = recover(model_dir, variant, corpus, out, Budget(steps=20), config=FAST, show_progress=False)
    assert summary["final_train_loss"] < summary["initial_train_loss"] - 0.05
    assert summary["val_loss_after"] < summary["val_loss_before"]
    recovered, tokenizer = load_pretrained(out)
    original, _ = load_pretrained(model_dir)
    assert tokenizer is not None
    shapes = {k: v.shape for k, v in original.state_dict().items()}
    assert {k: v.shape for k, v in recovered.state_dict().items()} == shapes  # merged: no adapter left
    changed = [k for k, v in recovered.state_dict().items() if not torch.equal(v, original.state_dict()[k])]
    assert changed and (variant == "cpt" or all("proj" in k for k in changed))
    with open(os.path.join(out, "summary.json"), encoding="utf-8") as fh:
        written = json.load(fh)
    assert written["variant"] == variant and written["seed"] == 0
    assert written["hyper_parameters"]["lr"] == FAST.lr and written["peak_memory_bytes"] > 0
    assert not os.path.exists(os.path.join(out, "resume"))  # resumable state removed once done


def test_step_budget_and_cpt_lora_split(setup):
    model_dir, corpus, root = setup
    out = str(root / "out_cpt_lora")
    summary = recover(model_dir, "cpt_lora", corpus, out, Budget(steps=7), config=FAST, show_progress=False)
    rows = read_log(out)
    assert [int(r["step"]) for r in rows] == list(range(1, 8))
    assert [r["phase"] for r in rows] == ["cpt"] * 3 + ["lora"] * 4
    assert summary["phases"] == [{"name": "cpt", "steps": 3}, {"name": "lora", "steps": 4}]
    per_step = FAST.batch_size * FAST.seqlen
    assert [int(r["tokens"]) for r in rows] == [per_step * s for s in range(1, 8)]


def test_token_budget_becomes_steps(setup):
    model_dir, corpus, root = setup
    out = str(root / "out_tokens")
    per_step = FAST.batch_size * FAST.seqlen
    summary = recover(
        model_dir, "lora", corpus, out, Budget(tokens=3 * per_step + 1), config=FAST, show_progress=False
    )
    rows = read_log(out)
    assert len(rows) == math.ceil((3 * per_step + 1) / per_step) == 4
    assert summary["tokens_trained"] == int(rows[-1]["tokens"]) == 4 * per_step
    assert summary["budget"] == {
        "steps": None,
        "tokens": 3 * per_step + 1,
        "total_steps": 4,
        "tokens_per_step": 64,
    }


def test_same_seed_same_result_on_cpu(setup):
    model_dir, corpus, root = setup
    a = recover(
        model_dir, "lora", corpus, str(root / "seed_a"), Budget(steps=3), config=FAST, show_progress=False
    )
    b = recover(
        model_dir, "lora", corpus, str(root / "seed_b"), Budget(steps=3), config=FAST, show_progress=False
    )
    c = recover(
        model_dir,
        "lora",
        corpus,
        str(root / "seed_c"),
        Budget(steps=3),
        seed=1,
        config=FAST,
        show_progress=False,
    )
    assert a["final_train_loss"] == b["final_train_loss"]
    assert read_log(str(root / "seed_a"))[0]["loss"] != read_log(str(root / "seed_c"))[0]["loss"]
    assert c["seed"] == 1


def test_merged_logits_equal_unmerged():
    tokenizer = make_tokenizer()
    model = make_model(len(tokenizer), layers=2)
    config = RecoveryConfig(lora_dropout=0.0)
    peft_model = attach_lora(model, config)
    torch.manual_seed(5)
    with torch.no_grad():  # LoRA B starts at zero: give the adapters real weight
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    peft_model.eval()
    ids = torch.randint(4, len(tokenizer), (2, 12))
    with torch.no_grad():
        unmerged = peft_model(input_ids=ids).logits
        base_out = peft_model.get_base_model()
        with peft_model.disable_adapter():
            without = peft_model(input_ids=ids).logits
        merged_model = merge_lora(peft_model)
        merged = merged_model(input_ids=ids).logits
    assert merged_model is base_out and not any("lora" in n for n, _ in merged_model.named_parameters())
    assert (unmerged - without).abs().max() > 1e-2  # the adapters matter ...
    assert torch.allclose(merged, unmerged, atol=1e-4, rtol=0)  # ... and merging keeps them exactly


def test_lora_targets_all_seven_projections():
    tokenizer = make_tokenizer()
    peft_model = attach_lora(make_model(len(tokenizer), layers=2), RecoveryConfig())
    adapted = {n.split(".")[-4] for n, _ in peft_model.named_parameters() if "lora_A" in n}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    ranks = {p.shape[0] for n, p in peft_model.named_parameters() if "lora_A" in n}
    assert ranks == {8}


def test_gradient_checkpointing_gives_the_same_training(setup):
    model_dir, corpus, root = setup
    plain = recover(
        model_dir, "lora", corpus, str(root / "gc_off"), Budget(steps=3), config=FAST, show_progress=False
    )
    config = RecoveryConfig(**{**FAST.to_dict(), "gradient_checkpointing": True})
    checked = recover(
        model_dir, "lora", corpus, str(root / "gc_on"), Budget(steps=3), config=config, show_progress=False
    )
    assert [float(r["loss"]) for r in read_log(str(root / "gc_on"))] == pytest.approx(
        [float(r["loss"]) for r in read_log(str(root / "gc_off"))], rel=1e-5
    )
    assert checked["val_loss_after"] == pytest.approx(plain["val_loss_after"], rel=1e-5)
