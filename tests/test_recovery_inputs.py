"""`prunebench recover` on bad input (one clear error, nothing trained or written) and on pruned
models whose layers lost their attention or MLP (no LoRA there, no crash)."""

from __future__ import annotations

import json

import pytest
import torch
from recovery_fixtures import make_model, make_tokenizer, one_thread, write_corpus, write_model

from prunebench.cli import main
from prunebench.errors import PrunebenchError
from prunebench.models import apply_plan, get_adapter, load_pretrained, save_pretrained
from prunebench.plan import LayerPlan, PruningPlan
from prunebench.recovery import Budget, RecoveryConfig, recover
from prunebench.recovery.lora import attach_lora
from prunebench.recovery.training import Checkpointer

FAST = ["--batch-size", "4", "--seqlen", "16", "--val-batches", "2", "--no-progress"]


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    return write_model(str(root / "model"), layers=3), write_corpus(str(root / "corpus")), root


@pytest.fixture
def no_training(monkeypatch):
    """Any attempt to start training fails the test: errors must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("training started despite bad input")

    monkeypatch.setattr(Checkpointer, "load", refuse)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--variant": "lorra"}, "unknown recovery variant 'lorra'; did you mean lora"),
        ({"--steps": "0"}, "budget must be > 0 steps"),
        ({"--steps": None, "--tokens": "-5"}, "budget must be > 0 tokens"),
        ({"--steps": None}, "give exactly one budget"),
        ({"--data": "missing/corpus.txt"}, "does not exist"),
        ({"--data": "no_such_corpus"}, "neither a local file or directory nor one of"),
        ({"--target-modules": "q_proj,qkv_proj"}, "qkv_proj exist in no decoder layer"),
        ({"--lr": "0"}, "learning rate must be > 0"),
        ({"--param": "lora_rank=4"}, "unknown recovery option 'lora_rank'; did you mean lora_r"),
        ({"--param": "lora_dropout=much"}, "recovery option lora_dropout expects float, got 'much'"),
        ({"--param": "micro_batch_size=3"}, "micro_batch_size 3 must be > 0 and divide batch_size 4"),
        ({"--scores": "x"}, "--scores is used by cfsp_lora only"),
        ({"--model": "/nonexistent/pruned_model"}, "model not found: /nonexistent/pruned_model"),
    ],
)
def test_bad_input_is_one_clear_error_before_training(setup, tmp_path, capsys, no_training, change, message):
    model_dir, corpus, _ = setup
    args = {
        "--model": model_dir,
        "--variant": "lora",
        "--data": corpus,
        "--out": str(tmp_path / "o"),
        "--steps": "3",
    }
    args.update(change)
    argv = ["recover", *[x for k, v in args.items() if v is not None for x in (k, v)], *FAST]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("prunebench: error:") and message in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_options_from_strings_and_from_config_values():
    text = RecoveryConfig.from_params(
        {"micro_batch_size": "2", "lora_betas": "0.9,0.99", "target_modules": "q_proj,v_proj", "lr": "2e-4"}
    )
    assert (
        text.micro_batch == 2
        and text.lora_betas == (0.9, 0.99)
        and text.target_modules == ("q_proj", "v_proj")
    )
    assert (
        text.lr == 2e-4
        and RecoveryConfig.from_params({"gradient_checkpointing": "true"}).gradient_checkpointing
    )
    typed = RecoveryConfig.from_params(
        {"target_modules": ["q_proj", "v_proj"], "lr": 2e-4, "micro_batch_size": 2, "lora_betas": [0.9, 0.99]}
    )
    assert typed == text


def test_malformed_instruction_file_is_refused(setup, tmp_path, no_training):
    model_dir, _, _ = setup
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"instruction": "say hi"}) + "\n")
    with pytest.raises(PrunebenchError, match="lacks 'instruction' or 'output'"):
        recover(model_dir, "lora", str(bad), str(tmp_path / "o"), Budget(steps=2))


def pruned_dir(root, plan_layers: dict[int, LayerPlan], name: str) -> str:
    tokenizer = make_tokenizer()
    model = make_model(len(tokenizer), layers=3)
    plan = PruningPlan("tiny", "manual", {}, 0.3, plan_layers)
    apply_plan(model, plan)
    save_pretrained(model, root / name, tokenizer=tokenizer, plan=plan)
    return str(root / name)


def test_layer_without_attention_gets_no_lora_and_trains(setup, tmp_path):
    _, corpus, root = setup
    model_dir = pruned_dir(root, {0: LayerPlan(kv_heads=[]), 2: LayerPlan(mlp_channels=[])}, "pruned")
    model, _ = load_pretrained(model_dir)
    assert get_adapter(model).attention(0) is None and get_adapter(model).mlp(2) is None
    peft_model = attach_lora(model, RecoveryConfig())
    adapted = {
        n.split(".lora_A")[0].split("layers.")[1] for n, _ in peft_model.named_parameters() if "lora_A" in n
    }
    assert {a for a in adapted if a.startswith("0.")} == {
        "0.mlp.gate_proj",
        "0.mlp.up_proj",
        "0.mlp.down_proj",
    }
    assert {a for a in adapted if a.startswith("2.")} == {f"2.self_attn.{p}_proj" for p in "qkvo"}
    assert len(adapted) == 3 + 7 + 4

    out = tmp_path / "rec"
    argv = ["recover", "--model", model_dir, "--variant", "cfsp_lora", "--data", corpus, "--out", str(out)]
    assert main([*argv, "--steps", "4", "--lr", "3e-3", *FAST]) == 0
    recovered, _ = load_pretrained(str(out))
    assert get_adapter(recovered).attention(0) is None and get_adapter(recovered).mlp(2) is None
    before = {k: v.shape for k, v in load_pretrained(model_dir)[0].state_dict().items()}
    assert {k: v.shape for k, v in recovered.state_dict().items()} == before
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["lora_ranks"]["ranks"]) == 3 and sum(summary["lora_ranks"]["ranks"]) == 24
    assert PruningPlan.load(out / "plan.json").layers.keys() == {0, 2}  # provenance kept
    ids = torch.randint(4, 20, (1, 8))
    assert torch.isfinite(recovered(input_ids=ids).logits).all()


def test_target_removed_everywhere_is_an_error(setup, tmp_path, no_training):
    _, corpus, root = setup
    model_dir = pruned_dir(root, {i: LayerPlan(kv_heads=[]) for i in range(3)}, "no_attention")
    with pytest.raises(PrunebenchError, match="q_proj, k_proj, v_proj, o_proj exist in no decoder layer"):
        recover(model_dir, "lora", corpus, str(tmp_path / "o"), Budget(steps=2))


def test_mlp_only_lora_on_a_model_without_attention(setup, tmp_path):
    _, corpus, root = setup
    model_dir = pruned_dir(root, {i: LayerPlan(kv_heads=[]) for i in range(3)}, "no_attention_2")
    config = RecoveryConfig(target_modules=("gate_proj", "up_proj", "down_proj"), batch_size=2, seqlen=8)
    summary = recover(model_dir, "lora", corpus, str(tmp_path / "mlp_only"), Budget(steps=1), config=config)
    assert summary["steps_trained"] == 1
