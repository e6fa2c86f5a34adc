"""Layer streaming: the same scores and decisions as the resident model, bounded memory, bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_model
from safetensors.torch import load_file, save_file

from prunebench.cli import main
from prunebench.errors import PrunebenchError
from prunebench.methods import get_method
from prunebench.methods.cfsp import by_channels, fine_score
from prunebench.methods.channel_stats import by_columns
from prunebench.models import load_pretrained, save_pretrained, streaming
from prunebench.models.integrity import fingerprint
from prunebench.models.streaming import (
    ResidentLayers,
    ResidentRunner,
    SafetensorsLayers,
    StreamingRunner,
    parse_bytes,
)
from prunebench.steps import score_model

FAMILIES = ("llama", "llama3", "mistral", "qwen2")  # MHA untied, GQA tied, GQA, biases + tied
STREAMING = {
    "flap": ({"nsamples": 6, "seqlen": 12, "batch_size": 4}, 0.2),
    "cfsp": ({"nsamples": 3, "seqlen": 12, "round_to": 4}, 0.1),
    "shortgpt": ({"nsamples": 6, "seqlen": 12, "batch_size": 4}, 0.25),
    "magnitude-sp": ({"budget": "native"}, 0.3),
    "wanda-sp": ({"nsamples": 6, "seqlen": 12, "batch_size": 4, "budget": "native"}, 0.3),
}


def _saved(tmp: Path, family: str, dtype: torch.dtype = torch.float32) -> Path:
    """A tiny random model of ``family`` saved as a model directory (weights in ``dtype``)."""
    model = make_tiny_model(family, num_hidden_layers=3, intermediate_size=40).to(dtype)
    return save_pretrained(model, tmp / family)


def _calibration(rows: int, seqlen: int) -> torch.Tensor:
    return torch.randint(0, 96, (rows, seqlen), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", sorted(STREAMING))
def test_streamed_scores_and_plans_equal_the_resident_ones(tmp_path, family, name):
    path = _saved(tmp_path, family)
    method = get_method(name)
    params, ratio = STREAMING[name]
    config = method.config(params)
    calibration = _calibration(config.nsamples, config.seqlen)
    model, _ = load_pretrained(path)
    resident = method.score(model, calibration, config)
    streamed = method.score_layers(StreamingRunner(SafetensorsLayers(path), "cpu"), calibration, config)
    assert resident.tensors.keys() == streamed.tensors.keys()
    for key, tensor in resident.tensors.items():
        assert torch.equal(tensor, streamed.tensors[key]), key
    assert resident.meta == streamed.meta
    first = method.select(resident, model, ratio, config)
    second = method.select(streamed, model, ratio, config)
    assert first.layers and first.to_json() == second.to_json()
    assert str(first.compensation) == str(second.compensation)


@pytest.mark.parametrize(("family", "name"), [("llama3", "flap"), ("qwen2", "flap"), ("llama", "shortgpt")])
def test_a_budget_that_spills_states_keeps_the_scores(tmp_path, family, name):
    path = _saved(tmp_path, family)
    method = get_method(name)
    config = method.config({"nsamples": 8, "seqlen": 12, "batch_size": 2})
    calibration = _calibration(8, 12)
    layers = SafetensorsLayers(path)
    state = 2 * 12 * 32 * 4  # one batch of hidden states, fp32
    unbounded = StreamingRunner(layers, "cpu")
    bounded = StreamingRunner(layers, "cpu", budget_bytes=unbounded.largest_layer + 2 * state)
    free = method.score_layers(unbounded, calibration, config)
    tight = method.score_layers(bounded, calibration, config)
    # ShortGPT compares each layer's input with its output: half the room holds the inputs.
    assert bounded.record.batches == 4 and bounded.record.batches_spilled == (3 if name == "shortgpt" else 2)
    assert unbounded.record.batches_spilled == 0
    for key, tensor in free.tensors.items():
        assert torch.equal(tensor, tight.tensors[key]), key


def test_resident_layers_stream_like_the_files(tmp_path):
    path = _saved(tmp_path, "qwen2")
    model, _ = load_pretrained(path)
    method = get_method("shortgpt")
    config = method.config({"nsamples": 4, "seqlen": 10, "batch_size": 3})
    calibration = _calibration(4, 10)
    on_cpu = method.score_layers(StreamingRunner(ResidentLayers(model), "cpu"), calibration, config)
    whole = method.score_layers(ResidentRunner(model), calibration, config)
    assert torch.equal(on_cpu.tensors["block_influence"], whole.tensors["block_influence"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_streamed_fingerprint_is_the_loaded_models(tmp_path, dtype):
    path = _saved(tmp_path, "llama", dtype=torch.bfloat16)
    model, _ = load_pretrained(path, dtype=dtype)
    assert SafetensorsLayers(path, dtype).fingerprint() == fingerprint(model)


def test_score_model_streams_and_records_the_pass(tmp_path):
    path = _saved(tmp_path, "llama3")
    samples = tmp_path / "samples.safetensors"
    save_file({"input_ids": _calibration(6, 12)}, str(samples))
    params = {"batch_size": 2}
    resident = score_model(str(path), "flap", tmp_path / "a", samples_path=samples, params=params)
    streamed = score_model(
        str(path),
        "flap",
        tmp_path / "b",
        samples_path=samples,
        params=params,
        stream=True,
        device_budget=10**6,
    )
    for key, tensor in load_file(tmp_path / "a" / "scores.safetensors").items():
        assert torch.equal(tensor, load_file(tmp_path / "b" / "scores.safetensors")[key]), key
    assert streamed.meta["base_fingerprint"] == resident.meta["base_fingerprint"]
    record = streamed.meta["streaming"]
    assert record["budget_bytes"] == 10**6 and record["batches"] == 3 and record["device"] == "cpu"
    assert record["layer_bytes"] == sum(
        p.numel() * 4 for p in load_pretrained(path)[0].model.layers[0].parameters()
    )
    assert "streaming" not in resident.meta


def test_a_tensor_read_in_blocks_is_the_tensor(tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "READ_BLOCK", 100)  # bytes: 3 rows of 32 fp32 values per block
    path = _saved(tmp_path, "qwen2")
    tensors = load_file(path / "model.safetensors")
    layers = SafetensorsLayers(path)
    for name in (
        "model.layers.1.mlp.down_proj.weight",
        "model.layers.0.self_attn.q_proj.bias",
        "model.norm.weight",
    ):
        assert torch.equal(layers.read(name), tensors[name]), name


def test_a_corrupt_layer_is_named_when_streamed(tmp_path):
    path = _saved(tmp_path, "llama")
    tensors = load_file(path / "model.safetensors")
    tensors["model.layers.2.mlp.up_proj.weight"][0, 0] = float("nan")
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    runner = StreamingRunner(SafetensorsLayers(path), "cpu")
    with pytest.raises(
        PrunebenchError,
        match=r"weight model\.layers\.2\.mlp\.up_proj\.weight \(40, 32\) holds non-finite values \(1 NaN",
    ):
        get_method("magnitude-sp").score_layers(runner, None, get_method("magnitude-sp").config({}))


def test_column_blocks_give_the_whole_matrix_values():
    torch.manual_seed(0)
    weight = torch.randn(48, 2500, dtype=torch.bfloat16)
    whole = weight.to(torch.float64)
    assert torch.equal(
        by_columns(weight, lambda w, _c: w.pow(2).sum(dim=0), block=1024), whole.pow(2).sum(dim=0)
    )
    norm = torch.rand(2500, dtype=torch.float64)
    assert torch.equal(
        by_columns(weight, lambda w, cols: (w.abs() * norm[None, cols]).mean(dim=0), block=512),
        (whole.abs() * norm[None, :]).mean(dim=0),
    )


@pytest.mark.parametrize("block", [256, 1024])
def test_channel_blocks_give_the_whole_layer_fine_scores(block):
    torch.manual_seed(0)
    down, up, gate = torch.randn(40, 2100), torch.randn(2100, 40), torch.randn(2100, 40)
    act = torch.rand(2100)
    blocked = by_channels(
        lambda r: fine_score(down[:, r], up[r], gate[r], act[r], 1.0, 1.0), 2100, block=1024
    )
    assert torch.equal(blocked, fine_score(down, up, gate, act, 1.0, 1.0))


def test_a_budget_below_one_layer_names_both_sizes(tmp_path):
    layers = SafetensorsLayers(_saved(tmp_path, "llama"))
    size = StreamingRunner(layers, "cpu").largest_layer
    with pytest.raises(
        PrunebenchError, match=r"device budget 1\.00 KiB is smaller than one decoder layer \(.* KiB"
    ):
        StreamingRunner(layers, "cpu", budget_bytes=1024)
    runner = StreamingRunner(layers, "cpu", budget_bytes=size + 10)
    method = get_method("shortgpt")
    with pytest.raises(PrunebenchError, match=r"plus the input and output states of one batch"):
        method.score_layers(runner, _calibration(4, 12), method.config({"batch_size": 2}))


@pytest.mark.parametrize(
    ("text", "expected"), [("1KiB", 1024), ("2K", 2048), ("1.5GB", 1_500_000_000), ("1e3", 1000), (512, 512)]
)
def test_sizes_parse(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["lots", "-3G", "0", "12 parsecs"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(PrunebenchError, match="memory budget"):
        parse_bytes(text)


def _cli(tmp: Path, path: Path, method: str, *extra: str) -> list[str]:
    return ["score", "--model", str(path), "--method", method, "--out", str(tmp / "o"), *extra]


@pytest.mark.parametrize(
    ("method", "extra", "message"),
    [
        ("shortened-taylor", ["--stream"], r"shortened-taylor cannot stream layers: .*full-model backward"),
        ("llm-pruner", ["--stream"], r"llm-pruner cannot stream layers: .*full-model backward"),
        ("flap", ["--device-budget", "1GiB"], r"a device budget applies to a streamed pass: give --stream"),
        ("flap", ["--stream", "--device-budget", "huge"], r"--device-budget 'huge' is not a size"),
        (
            "magnitude-sp",
            ["--stream", "--device-budget", "1KiB"],
            r"device budget 1\.00 KiB is smaller than one",
        ),
        ("flap", ["--stream", "--device", "cuda:7"], r"device 'cuda:7' cannot be used"),
    ],
)
def test_bad_streaming_input_is_one_line(tmp_path, capsys, method, extra, message):
    path = _saved(tmp_path, "llama")
    capsys.readouterr()
    assert main(_cli(tmp_path, path, method, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err
    assert not (tmp_path / "o").exists()
