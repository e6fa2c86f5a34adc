"""Models split over several GPUs: the option's checks (before loading), the study keys, the rules' GPU count."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from prunebench.cli import main
from prunebench.errors import PrunebenchError
from prunebench.models.device import check_gpus
from prunebench.study import validate_config
from prunebench.study.script import device_argv, stream_argv

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = REPO / "tests" / "data" / "tiny-model"


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine that reports two CUDA devices (nothing is ever put on them here)."""
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_more_gpus_than_the_machine_has_is_refused(two_gpus):
    check_gpus("cuda", 2)
    with pytest.raises(
        PrunebenchError, match=r"gpus: 4 asks for more CUDA devices than this machine has \(2 visible"
    ):
        check_gpus("cuda", 4)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--gpus", "2"], r"gpus: 2 splits a model over CUDA devices; device 'cpu' is not one"),
        (["--gpus", "0"], r"gpus must be at least 1, got 0"),
        (["--gpu-memory", "3GiB"], r"--gpu-memory limits a model split over GPUs: give --gpus N"),
        (["--device", "cuda:3", "--gpus", "2"], r"device 'cuda:3' cannot be used"),
        (["--stream", "--gpus", "2", "--device", "cuda"], r"cannot be used|not both"),
    ],
)
def test_bad_gpu_options_are_one_line_before_loading(tmp_path, capsys, argv, message):
    cmd = ["score", "--model", str(TINY_MODEL), "--method", "flap", "--out", str(tmp_path / "o"), *argv]
    assert main(cmd) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err


def test_stream_and_gpus_together_are_refused(tmp_path, two_gpus):
    from prunebench.steps import score_model

    with pytest.raises(
        PrunebenchError, match="a streamed pass runs on one device: give --stream or --gpus N"
    ):
        score_model(str(TINY_MODEL), "flap", tmp_path / "o", stream=True, gpus=2, device="cuda")


def _tiny(**model) -> dict:
    config = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    config["models"]["tiny"].update(model)
    return config


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            {"gpus": 2},
            r"config\.models\.tiny\.gpus: gpus: 2 splits a model over CUDA devices; device is 'cpu'",
        ),
        ({"gpus": 0}, r"config\.models\.tiny\.gpus"),
        (
            {"gpu_memory": "10GiB"},
            r"config\.models\.tiny\.gpu_memory: gpu_memory limits a model split over GPUs",
        ),
        (
            {"device_budget": "1GiB"},
            r"config\.models\.tiny\.device_budget: a device budget applies to a streamed pass",
        ),
        ({"stream": True, "device_budget": "lots"}, r"device_budget 'lots' is not a size"),
        (
            {"stream": True, "path": "someone/model"},
            r"config\.models\.tiny\.stream: streaming reads a local model",
        ),
    ],
)
def test_bad_placement_keys_are_named(monkeypatch, model, message):
    monkeypatch.chdir(REPO)
    with pytest.raises(PrunebenchError, match=message):
        validate_config(_tiny(**model))


def test_a_split_study_needs_the_gpus_where_it_starts(monkeypatch, two_gpus):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    config = _tiny(device="cuda", gpus=4)
    validate_config(config)  # jobs may run elsewhere (a cluster)
    with pytest.raises(
        PrunebenchError, match=r"config\.models\.tiny\.gpus: gpus: 4 asks for more CUDA devices"
    ):
        validate_config(config, devices=True)


def test_scripts_pass_the_split_and_the_stream():
    spec = {"dtype": "bfloat16", "device": "cuda", "gpus": 4, "gpu_memory": "70GiB", "stream": True}
    assert device_argv(spec) == [
        "--dtype",
        "bfloat16",
        "--device",
        "cuda",
        "--gpus",
        "4",
        "--gpu-memory",
        "70GiB",
    ]
    assert device_argv({"dtype": "float32", "device": "cpu", "gpus": 1}) == [
        "--dtype",
        "float32",
        "--device",
        "cpu",
    ]
    assert stream_argv(spec | {"device_budget": "20GiB"}, "flap") == ["--stream", "--device-budget", "20GiB"]
    assert stream_argv(spec, "shortened-taylor") == []  # it cannot stream: the model is loaded
    assert stream_argv(spec | {"stream": False}, "flap") == []
