"""The prunebench CLI: apply, info, eval ppl, and one clear error per bad input, with no output written."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from conftest import make_tiny_model

from prunebench.cli import main
from prunebench.models import get_adapter, load_pretrained, mask_plan, save_pretrained
from prunebench.plan import LayerPlan, PruningPlan


@pytest.fixture
def base_dir(tmp_path, tiny_tokenizer):
    model = make_tiny_model("llama3", vocab_size=len(tiny_tokenizer))
    save_pretrained(model, tmp_path / "base", tokenizer=tiny_tokenizer)
    return tmp_path / "base"


def test_apply_then_load_reproduces_masked_logits(tmp_path, base_dir):
    plan = PruningPlan(
        str(base_dir), "manual", {}, 0.25, {1: LayerPlan([0], list(range(24))), 2: LayerPlan([], [])}
    )
    plan.save(tmp_path / "plan.json")
    assert (
        main(
            [
                "apply",
                "--model",
                str(base_dir),
                "--plan",
                str(tmp_path / "plan.json"),
                "--out",
                str(tmp_path / "p"),
            ]
        )
        == 0
    )
    base, _ = load_pretrained(base_dir)
    pruned, tok = load_pretrained(tmp_path / "p")
    ids = torch.arange(5, 25).view(2, 10)
    assert (pruned(ids).logits - mask_plan(base, plan)(ids).logits).abs().max().item() <= 1e-5
    written = json.loads((tmp_path / "p" / "plan.json").read_text())
    assert (
        0 < written["achieved"]["decoder_ratio"] < 1
        and written["achieved"]["total_ratio"] < written["achieved"]["decoder_ratio"]
    )
    assert get_adapter(pruned).num_layers == 3 and tok is not None


def test_info_and_eval_ppl(tmp_path, base_dir, tiny_text, capsys):
    assert main(["info", "--model", str(base_dir), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["family"] == "llama" and facts["layers"] == 4 and facts["kv_heads"] == 2
    (tmp_path / "t.txt").write_text(tiny_text)
    out = tmp_path / "ppl.json"
    assert (
        main(
            [
                "eval",
                "ppl",
                "--model",
                str(base_dir),
                "--text",
                str(tmp_path / "t.txt"),
                "--seqlen",
                "16",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["ppl"] > 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["apply", "--model", "{base}", "--plan", "{tmp}/bad.json", "--out", "{tmp}/o"], "not valid JSON"),
        (["apply", "--model", "{base}", "--plan", "{tmp}/wide.json", "--out", "{tmp}/o"], "kv_heads"),
        (
            ["apply", "--model", "{tmp}/nowhere", "--plan", "{tmp}/wide.json", "--out", "{tmp}/o"],
            "model not found",
        ),
        (
            [
                "eval",
                "ppl",
                "--model",
                "{base}",
                "--text",
                "{tmp}/t.txt",
                "--seqlen",
                "1",
                "--out",
                "{tmp}/o",
            ],
            "at least 2",
        ),
        (
            [
                "eval",
                "ppl",
                "--model",
                "{base}",
                "--text",
                "{tmp}/t.txt",
                "--seqlen",
                "999",
                "--out",
                "{tmp}/o",
            ],
            "context",
        ),
        (
            [
                "eval",
                "ppl",
                "--model",
                "{base}",
                "--text",
                "{tmp}/empty.txt",
                "--seqlen",
                "8",
                "--out",
                "{tmp}/o",
            ],
            "empty",
        ),
        (
            ["prune", "--model", "{base}", "--method", "no-such", "--ratio", "0.2", "--out", "{tmp}/o"],
            "unknown method",
        ),
        (["prune", "--model", "{base}", "--method", "x", "--ratio", "1.2", "--out", "{tmp}/o"], r"\[0, 1\)"),
    ],
)
def test_bad_input_is_one_clear_line_and_no_output(tmp_path, base_dir, args, message, capsys):
    (tmp_path / "bad.json").write_text("{nope")
    PruningPlan("m", "manual", {}, 0.1, {0: LayerPlan(kv_heads=[9])}).save(tmp_path / "wide.json")
    (tmp_path / "t.txt").write_text("some text " * 50)
    (tmp_path / "empty.txt").write_text("")
    argv = [a.format(base=base_dir, tmp=tmp_path) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("prunebench: error:")
    assert re.search(message, err[0])
    assert not (tmp_path / "o").exists()


def test_console_script_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "prunebench.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "prune" in result.stdout
