"""Greedy searches with streamed layer weights: the resident search's order and scores, bounded traffic."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_model
from safetensors.torch import save_file

from prunebench.cli import main
from prunebench.errors import PrunebenchError
from prunebench.methods import get_method
from prunebench.methods.blockpruner import CalibrationPerplexity, candidate_list
from prunebench.methods.greedy_method import calibration_batches
from prunebench.methods.greedy_reference import reference_search
from prunebench.methods.greedy_search import StatePlacement, search
from prunebench.methods.greedy_stream import StreamedDecoder
from prunebench.models import load_pretrained, save_pretrained
from prunebench.models.streaming import ResidentLayers, ResidentRunner, SafetensorsLayers, StreamingRunner
from prunebench.steps import score_model

PARAMS = {
    "blockpruner": {"batch_size": 3},
    "finercut": {"batch_size": 3, "exclude": 0.0},
    "sleb": {"batch_size": 3},
}
STATE_BYTES = 8 * 12 * 32 * 4  # the whole calibration set's hidden state: 8 rows x 12 tokens x 32, fp32


def _saved(tmp: Path, family: str, dtype: torch.dtype = torch.float32) -> Path:
    model = make_tiny_model(family, num_hidden_layers=4, initializer_range=0.3).to(dtype)
    return save_pretrained(model, tmp / family)


def _calibration() -> torch.Tensor:
    return torch.randint(3, 96, (8, 12), generator=torch.Generator().manual_seed(5))


def _streamed(method, path: Path, config, **runner_options):
    runner = StreamingRunner(SafetensorsLayers(path), "cpu", **runner_options)
    return method.score_layers(runner, _calibration(), config)


@pytest.mark.parametrize(
    ("family", "dtype"), [("llama", torch.float32), ("qwen2", torch.float32), ("llama3", torch.bfloat16)]
)
@pytest.mark.parametrize("name", sorted(PARAMS))
def test_streamed_search_is_the_resident_search(tmp_path, family, dtype, name):
    path = _saved(tmp_path, family, dtype)
    method = get_method(name)
    config = method.config(PARAMS[name])
    model, _ = load_pretrained(path, dtype=dtype)
    resident = method.score(model, _calibration(), config)
    runner = StreamingRunner(SafetensorsLayers(path, dtype), "cpu")
    streamed = method.score_layers(runner, _calibration(), config)
    assert streamed.meta["order"] == resident.meta["order"]
    assert streamed.meta["step_scores"] == resident.meta["step_scores"]
    for key, tensor in resident.tensors.items():
        assert torch.equal(tensor, streamed.tensors[key]), key
    record = streamed.meta.pop("streamed_search")
    assert resident.meta == streamed.meta
    assert record["candidates_per_sweep"] == 8 and not record["early_abandoning"]
    assert runner.record.batches == 3
    assert (
        method.select(streamed, model, 0.2, config).to_json()
        == method.select(resident, model, 0.2, config).to_json()
    )


@pytest.mark.parametrize("name", sorted(PARAMS))
@pytest.mark.parametrize(
    ("cache_states", "device_states"),
    [(3, 0.0), (3, 2.5), (100, 1.5), (0.5, 0.5)],  # in states of the whole calibration set
)
def test_small_caches_and_device_budgets_keep_the_order(
    monkeypatch, tmp_path, name, cache_states, device_states
):
    """Candidates in several sweeps, sparse or no prefix cache and memo, states spilled to CPU copies."""
    path = _saved(tmp_path, "llama3")
    method = get_method(name)
    free_config = method.config(PARAMS[name])
    model, _ = load_pretrained(path)
    resident = method.score(model, _calibration(), free_config)
    spilled = []
    keep = StatePlacement.keep
    monkeypatch.setattr(
        StatePlacement, "keep", lambda self, h, on: spilled.append(not on) or keep(self, h, on)
    )
    gb = {
        "cache_gb": cache_states * STATE_BYTES / 2**30,
        "device_cache_gb": device_states * STATE_BYTES / 2**30,
    }
    streamed = _streamed(method, path, method.config({**PARAMS[name], **gb}))
    assert streamed.meta["order"] == resident.meta["order"]
    assert streamed.meta["step_scores"] == resident.meta["step_scores"]
    sweep = streamed.meta["streamed_search"]["candidates_per_sweep"]
    assert sweep == max(1, min(8, int(cache_states)))
    assert any(spilled) == bool(device_states)


def test_streamed_search_matches_the_naive_search_and_reads_the_layers_once_per_step(tmp_path):
    path = _saved(tmp_path, "qwen2")
    model, _ = load_pretrained(path)
    batches = calibration_batches(_calibration(), 3, "t")
    criterion = CalibrationPerplexity(batches, 0)
    naive = reference_search(model, batches, criterion, candidate_list(4, "mix"), 6)
    decoder = StreamedDecoder(SafetensorsLayers(path), batches, torch.device("cpu"))
    streamed = search(decoder, criterion, candidate_list(4, "mix"), 6, "t", progress=False)
    assert streamed.order == naive.order and streamed.scores == naive.scores
    # The whole memo fits: every step is one sweep of all candidates and the prefix adopts the winner's
    # states, so the layers are read once to fill the prefix cache and once per step, no more.
    assert decoder.sweeps == 1 + 6
    assert decoder.loads <= decoder.sweeps * 2 * 4


def test_layers_resident_in_cpu_memory_stream_like_the_files(tmp_path):
    path = _saved(tmp_path, "llama")
    model, _ = load_pretrained(path)
    method = get_method("sleb")
    config = method.config(PARAMS["sleb"])
    from_memory = method.score_layers(StreamingRunner(ResidentLayers(model), "cpu"), _calibration(), config)
    resident = method.score_layers(ResidentRunner(model), _calibration(), config)
    assert from_memory.meta["order"] == resident.meta["order"]
    assert from_memory.meta["step_scores"] == resident.meta["step_scores"]
    assert "streamed_search" not in resident.meta


def test_score_stream_records_the_pass_and_a_small_budget_is_refused(tmp_path):
    path = _saved(tmp_path, "llama3")
    samples = tmp_path / "samples.safetensors"
    save_file({"input_ids": _calibration()}, str(samples))
    params = {"batch_size": 3, "max_steps": 3}
    resident = score_model(str(path), "blockpruner", tmp_path / "a", samples_path=samples, params=params)
    streamed = score_model(
        str(path), "blockpruner", tmp_path / "b", samples_path=samples, params=params, stream=True,
        device_budget=10**6,
    )  # fmt: skip
    assert streamed.meta["order"] == resident.meta["order"] and len(resident.meta["order"]) == 3
    assert streamed.meta["streaming"]["batches"] == 3 and streamed.meta["streaming"]["budget_bytes"] == 10**6
    layer = streamed.meta["streaming"]["layer_bytes"]
    with pytest.raises(
        PrunebenchError,
        match=r"device budget .* is too small for one decoder layer \(.*\), the final norm and LM head "
        r"\(12\.12 KiB\) and the input and output states of one batch \(9\.00 KiB for 3 x 12 tokens\)",
    ):
        score_model(
            str(path), "blockpruner", tmp_path / "c", samples_path=samples, params=params, stream=True,
            device_budget=layer + 1024,
        )  # fmt: skip
    assert not (tmp_path / "c").exists()


def test_methods_say_how_the_greedy_searches_stream(capsys):
    assert main(["methods", "--streaming"]) == 0
    out = capsys.readouterr().out
    for name in PARAMS:
        block = re.search(rf"^{name} .*\n\s+streams: (.*)$", out, re.M)
        assert block is not None and block.group(1).startswith("yes, layer-major"), out
