"""ShortGPT: Block Influence on pre-norm residual states, one-shot layer deletion."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from block_models import make_identity, own_text, sharp_model, without_layers
from conftest import make_tiny_model
from transformers import AutoModelForCausalLM

from prunebench.cli import main
from prunebench.errors import PrunebenchError
from prunebench.methods import Scores, get_method
from prunebench.methods.shortgpt import block_influence
from prunebench.models import apply_plan, get_adapter, load_pretrained, save_pretrained
from prunebench.models.counting import achieved_ratios
from prunebench.models.streaming import ResidentRunner


def _hf_hidden_state_bi(model, calibration) -> torch.Tensor:
    """BI from HF's ``output_hidden_states`` taken naively: its last entry is after the final norm."""
    with torch.no_grad():
        states = model(calibration, output_hidden_states=True, use_cache=False).hidden_states
    return torch.stack(
        [1 - F.cosine_similarity(states[i], states[i + 1], dim=-1).mean() for i in range(len(states) - 1)]
    ).double()


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_bi_matches_hidden_states_before_the_last_layer(family):
    model = make_tiny_model(family, num_hidden_layers=5)
    calibration = torch.randint(3, 96, (3, 12), generator=torch.Generator().manual_seed(3))
    ours = block_influence(ResidentRunner(model), calibration, batch_size=2)
    reference = _hf_hidden_state_bi(model, calibration)
    assert torch.allclose(ours[:-1], reference[:-1], atol=1e-6, rtol=0)
    assert torch.allclose(ours, block_influence(ResidentRunner(model), calibration, batch_size=3), atol=1e-9)


def test_identity_layer_is_removed_first():
    model = sharp_model(identity=(3,), layers=6)
    method = get_method("shortgpt")
    config = method.config({})
    scores = method.score(model, own_text(model), config)
    assert abs(float(scores.tensors["block_influence"][3])) < 1e-6
    assert scores.meta["order"][0] == 3
    plan = method.select(scores, model, 0.1, config)
    assert sorted(plan.layers) == [3] and plan.notes["native"]["blocks_removed"] == 1


def test_last_layer_compares_pre_norm_states():
    model = sharp_model(layers=6)
    make_identity(model, 5)  # the last layer does nothing
    with torch.no_grad():  # a final norm that turns its (unchanged) input strongly
        model.model.norm.weight.copy_(torch.linspace(-3.0, 3.0, model.config.hidden_size))
    calibration = own_text(model)
    ours = block_influence(ResidentRunner(model), calibration, batch_size=4)
    assert abs(float(ours[5])) < 1e-6 and int(ours.argmin()) == 5
    naive = _hf_hidden_state_bi(model, calibration)
    assert int(naive.argmin()) != 5 and float(naive[5]) > float(naive.min()) + 0.1  # the case discriminates


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5])
def test_achieved_ratio_and_plain_checkpoint(tmp_path, ratio):
    model = sharp_model(layers=6, family="qwen2")
    dense = sharp_model(layers=6, family="qwen2")
    method = get_method("shortgpt")
    config = method.config({})
    method.check_ratio(model, ratio, config)
    plan = method.select(method.score(model, own_text(model), config), model, ratio, config)
    removed = sorted(plan.layers)
    blocks = math.ceil(ratio * 6 - 1e-9)
    assert len(removed) == blocks == plan.notes["native"]["blocks_removed"]
    apply_plan(model, plan)
    achieved = achieved_ratios(model, dense)["decoder_ratio"]
    assert ratio <= achieved < ratio + 1 / 6
    save_pretrained(model, tmp_path / "p", plan=plan)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "p").eval()
    ids = torch.arange(3, 23).view(2, 10)
    with torch.no_grad():
        reference = without_layers(dense, removed)(ids, use_cache=False).logits
        assert (loaded(ids).logits - reference).abs().max().item() <= 1e-5


def test_bad_input_is_a_clear_error():
    model = sharp_model(layers=4)
    method = get_method("shortgpt")
    config = method.config({})
    with pytest.raises(PrunebenchError, match="blocks"):
        method.check_ratio(model, 0.8, config)  # needs all four layers; one must stay
    method.check_ratio(model, 0.75, config)
    with pytest.raises(PrunebenchError, match="ratio"):
        method.check_ratio(model, 1.0, config)
    with pytest.raises(PrunebenchError, match="calibration"):
        method.score(model, torch.zeros(3, 1, dtype=torch.long), config)
    with pytest.raises(PrunebenchError, match="5 blocks"):
        method.select(Scores({"block_influence": torch.zeros(5)}, {}), model, 0.2, config)


@pytest.mark.parametrize("name", ["shortgpt", "shortened-ppl", "shortened-taylor"])
def test_cli_score_then_prune(tmp_path, tiny_tokenizer, tiny_text, name):
    model = make_tiny_model("llama3", num_hidden_layers=8, vocab_size=len(tiny_tokenizer))
    save_pretrained(model, tmp_path / "base", tokenizer=tiny_tokenizer)
    (tmp_path / "calib.txt").write_text(tiny_text)
    base = str(tmp_path / "base")
    common = ["--model", base, "--method", name, "--param", "batch_size=2"]
    calib = ["--calib", str(tmp_path / "calib.txt"), "--nsamples", "4", "--seqlen", "16"]
    assert main(["score", *common, *calib, "--out", str(tmp_path / "s")]) == 0
    assert (
        main(
            [
                "prune",
                *common,
                "--ratio",
                "0.2",
                "--scores",
                str(tmp_path / "s"),
                "--out",
                str(tmp_path / "p"),
            ]
        )
        == 0
    )
    pruned, tokenizer = load_pretrained(tmp_path / "p")
    assert get_adapter(pruned).num_layers == 6 and tokenizer is not None
    # a ratio that the "+" heuristic (or keeping one layer) cannot reach: one line, exit 2, nothing written
    assert (
        main(
            [
                "prune",
                *common,
                "--ratio",
                "0.9",
                "--scores",
                str(tmp_path / "s"),
                "--out",
                str(tmp_path / "q"),
            ]
        )
        == 2
    )
    assert not (tmp_path / "q").exists()
