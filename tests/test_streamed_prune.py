"""``prunebench prune --stream``: the model stays in CPU memory, a per-ratio pass (Wanda-sp's) takes one
decoder layer at a time to the device, and the pruned checkpoint equals the resident prune's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_model
from safetensors.torch import load_file, save_file

from prunebench.cli import main
from prunebench.models import save_pretrained

CALIBRATED = {
    "wanda-sp": [
        "--param",
        "nsamples=6",
        "--param",
        "seqlen=12",
        "--param",
        "batch_size=2",
        "--param",
        "budget=native",
    ],
    "flap": ["--param", "batch_size=2"],
}


def _model(tmp: Path, family: str) -> Path:
    return save_pretrained(make_tiny_model(family, num_hidden_layers=3, intermediate_size=40), tmp / family)


def _scores(tmp: Path, model: Path, method: str) -> list[str]:
    samples = tmp / "samples.safetensors"
    ids = torch.randint(0, 96, (6, 12), generator=torch.Generator().manual_seed(3))
    save_file({"input_ids": ids}, str(samples))
    common = ["--model", str(model), "--method", method, *CALIBRATED[method]]
    assert main(["score", *common, "--samples", str(samples), "--out", str(tmp / "scores")]) == 0
    return [*common, "--scores", str(tmp / "scores")]


def _plan(directory: Path) -> dict:
    return json.loads((directory / "plan.json").read_text())


@pytest.mark.parametrize(
    ("family", "method"), [("llama3", "wanda-sp"), ("qwen2", "wanda-sp"), ("llama", "flap")]
)
def test_a_streamed_prune_writes_the_resident_checkpoint(tmp_path, family, method):
    common = _scores(tmp_path, _model(tmp_path, family), method)
    assert main(["prune", *common, "--ratio", "0.3", "--out", str(tmp_path / "resident")]) == 0
    # 34 KiB: one layer's weights (27.25 KiB) and two of the three batches' states (3 KiB each): it spills
    streamed = ["--stream", "--device-budget", "34KiB"] if method == "wanda-sp" else ["--stream"]
    assert main(["prune", *common, "--ratio", "0.3", "--out", str(tmp_path / "streamed"), *streamed]) == 0
    resident, plan = _plan(tmp_path / "resident"), _plan(tmp_path / "streamed")
    record = plan["notes"].pop("streaming", None)
    for notes in (resident["notes"], plan["notes"]):
        notes.pop("cost")
    assert resident == plan
    first = load_file(tmp_path / "resident" / "model.safetensors")
    second = load_file(tmp_path / "streamed" / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    if method == "wanda-sp":  # the sequential pass ran layer by layer on the device within the budget
        assert (
            record["budget_bytes"] == 34 * 1024 and record["batches"] == 3 and record["batches_spilled"] > 0
        )
    else:  # FLAP's selection reads only the scores: no pass to record
        assert record is None


@pytest.mark.parametrize(
    ("method", "extra", "message"),
    [
        (
            "policy-gradient",
            ["--stream", "--scores", "x"],
            r"policy-gradient cannot prune streamed: .*forward",
        ),
        (
            "wanda-sp",
            ["--stream", "--calib", "resources/demo/corpus"],
            r"a streamed prune selects from saved scores",
        ),
        (
            "wanda-sp",
            ["--device-budget", "1GiB"],
            r"a device budget applies to a streamed pass: give --stream",
        ),
    ],
)
def test_bad_streamed_prune_input_is_one_line(tmp_path, capsys, method, extra, message):
    model = _model(tmp_path, "llama")
    capsys.readouterr()
    argv = [
        "prune",
        "--model",
        str(model),
        "--method",
        method,
        "--ratio",
        "0.3",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err
    assert not (tmp_path / "o").exists()
