"""Pruned checkpoints: exact roundtrip in a fresh process, remote code for lm-eval, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from prunebench.errors import PrunebenchError
from prunebench.models import apply_plan, load_pretrained, mask_plan, save_pretrained
from prunebench.plan import LayerPlan, PruningPlan

IDS = torch.arange(3, 27).view(2, 12)


def _irregular_plan() -> PruningPlan:
    return PruningPlan(
        "tiny",
        "manual",
        {},
        0.3,
        {
            0: LayerPlan(kv_heads=[1], mlp_channels=list(range(0, 48, 3))),
            2: LayerPlan(kv_heads=[]),
            3: LayerPlan([], []),
        },
        compensation={0: {"down_proj": torch.linspace(-1, 1, 32)}},
    )


def test_roundtrip_in_fresh_process_and_with_remote_code(tmp_path, tiny_tokenizer):
    model = make_tiny_model("llama3")
    plan = _irregular_plan()
    expected = mask_plan(model, plan)(IDS).logits
    apply_plan(model, plan)
    out = tmp_path / "pruned"
    save_pretrained(model, out, tokenizer=tiny_tokenizer, plan=plan)
    torch.save(expected, tmp_path / "expected.pt")
    code = (
        "import sys, torch\n"
        "from prunebench.models import load_pretrained\n"
        f"model, tok = load_pretrained({str(out)!r})\n"
        f"expected = torch.load({str(tmp_path / 'expected.pt')!r})\n"
        f"ids = torch.arange(3, 27).view(2, 12)\n"
        "diff = (model(ids).logits - expected).abs().max().item()\n"
        "assert tok is not None\n"
        "print(diff)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(result.stdout.strip().splitlines()[-1]) <= 1e-5
    remote = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    assert (remote(IDS).logits - expected).abs().max().item() <= 1e-5
    assert (out / "modeling_prunebench.py").is_file()
    assert PruningPlan.load(out / "plan.json").compensation[0]["down_proj"].shape == (32,)


def test_depth_only_pruning_is_a_plain_checkpoint(tmp_path):
    model = make_tiny_model("qwen2")
    expected_layers = 2
    plan = PruningPlan("tiny", "manual", {}, 0.5, {1: LayerPlan([], []), 2: LayerPlan([], [])})
    expected = mask_plan(model, plan)(IDS).logits
    apply_plan(model, plan)
    save_pretrained(model, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert "prunebench_layers" not in config and "auto_map" not in config
    assert config["num_hidden_layers"] == expected_layers
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert (plain(IDS).logits - expected).abs().max().item() <= 1e-5


def test_tensors_disagreeing_with_config_are_refused(tmp_path):
    model = make_tiny_model("llama3")
    apply_plan(model, _irregular_plan())
    save_pretrained(model, tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    tensors = load_file(str(weights))
    key = next(k for k in tensors if "layers.0.mlp.gate_proj.weight" in k)
    tensors[key] = torch.zeros(20, 32)
    save_file(tensors, str(weights), metadata={"format": "pt"})
    with pytest.raises(PrunebenchError, match="cannot load model"):
        load_pretrained(tmp_path / "m")


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "model not found"),
        (lambda p: p.mkdir(), "no config.json"),
        (
            lambda p: (p.mkdir(), (p / "config.json").write_text('{"model_type": "bert"}')),
            "'bert' is not supported",
        ),
        (lambda p: (p.mkdir(), (p / "config.json").write_text("{oops")), "not valid JSON"),
    ],
)
def test_bad_model_paths(tmp_path, setup, message):
    path: Path = tmp_path / "model"
    setup(path)
    with pytest.raises(PrunebenchError, match=message):
        load_pretrained(path)


def test_save_is_atomic_on_failure(tmp_path):
    model = make_tiny_model("llama3")

    class Broken:
        def save_pretrained(self, directory):
            raise OSError("disk full")

    with pytest.raises(OSError):
        save_pretrained(model, tmp_path / "out", tokenizer=Broken())
    assert list(tmp_path.iterdir()) == []
