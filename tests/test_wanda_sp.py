"""Wanda-sp (FLAP repo baseline): metric, uniform counts, sequential statistics, GQA/biases, bad input."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_model
from transformers import GPT2Config, GPT2LMHeadModel

from prunebench.data import calibration_samples, load_text
from prunebench.errors import PrunebenchError
from prunebench.evaluation.perplexity import perplexity
from prunebench.methods import get_method
from prunebench.methods.channel_stats import InputStats
from prunebench.methods.flap import keep_uniform
from prunebench.methods.wanda_sp import wanda_scores
from prunebench.models import apply_plan, get_adapter, load_pretrained, mask_plan
from prunebench.models.counting import achieved_ratios
from prunebench.plan import LayerPlan, PruningPlan

VOCAB = 96


def tiny(kind: str) -> torch.nn.Module:
    """A Llama-3-like GQA decoder (head_dim 32) or a Qwen2 decoder with q/k/v biases (head_dim 64)."""
    if kind == "llama3-gqa-hd32":
        return make_tiny_model(
            "llama3",
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=3,
            num_attention_heads=8,
            num_key_value_heads=4,
            head_dim=32,
        )
    return make_tiny_model("qwen2", hidden_size=64, intermediate_size=256, num_hidden_layers=2, head_dim=64)


def calibration(n: int = 10, t: int = 12) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, t), generator=torch.Generator().manual_seed(2))


def test_wanda_metric_on_hand_numbers():
    stats = InputStats(2)
    # two samples, one token each: rho = mean over samples of sum_t x^2 = [(1+7)/2, (9+9)/2] = [4, 9]
    stats.update(torch.tensor([[[1.0, 3.0]], [[7**0.5, 3.0]]]))
    weight = torch.tensor([[1.0, -2.0], [3.0, 4.0]])
    # |W| * sqrt(rho) = [[2, 6], [6, 12]] -> mean over output rows = [4, 9]
    torch.testing.assert_close(wanda_scores(stats, weight), torch.tensor([4.0, 9.0], dtype=torch.float64))


def reference_layer_decisions(model, plan_so_far, layer, input_ids, remove_heads, remove_channels):
    """Layer ``layer``'s decisions recomputed independently: physically prune the earlier layers with
    ``apply_plan``, run the *whole* model with hooks, and apply the official uniform rule."""
    pruned = apply_plan(copy.deepcopy(model), plan_so_far)
    adapter = get_adapter(pruned)
    attn_stats, mlp_stats = (
        InputStats(adapter.attention(layer).o_proj.in_features),
        InputStats(adapter.intermediate_size),
    )
    o_proj, down_proj = adapter.attention(layer).o_proj, adapter.mlp(layer).down_proj
    o_proj.register_forward_pre_hook(lambda _m, a: attn_stats.update(a[0]))
    down_proj.register_forward_pre_hook(lambda _m, a: mlp_stats.update(a[0]))
    with torch.no_grad():
        pruned(input_ids)
    width = adapter.group_size * adapter.head_dim
    heads = wanda_scores(attn_stats, o_proj.weight).reshape(-1, width).sum(dim=1)
    keep_heads = keep_uniform(heads[None], remove_heads)[0].nonzero().flatten().tolist()
    keep_channels = keep_uniform(wanda_scores(mlp_stats, down_proj.weight)[None], remove_channels)[0]
    return keep_heads, keep_channels.nonzero().flatten().tolist()


def test_sequential_statistics_come_from_the_pruned_earlier_layers():
    model = tiny("llama3-gqa-hd32")
    wanda = get_method("wanda-sp")
    config = wanda.config({"batch_size": 4})
    calib = calibration()
    plan = wanda.select(wanda.score(model, calib, config), model, 0.3, config)
    remove_heads = plan.notes["removed_kv_groups_per_layer"]
    remove_channels = plan.notes["removed_channels_per_layer"]
    assert remove_heads >= 1 and remove_channels >= 1
    for layer in (1, 2):
        earlier = {i: plan.layers[i] for i in range(layer)}
        partial = PruningPlan("tiny", "wanda-sp", {}, 0.3, earlier)
        expected = reference_layer_decisions(model, partial, layer, calib, remove_heads, remove_channels)
        assert (plan.layers[layer].kv_heads, plan.layers[layer].mlp_channels) == expected
    dense = reference_layer_decisions(
        model, PruningPlan("tiny", "wanda-sp", {}, 0.3, {}), 2, calib, remove_heads, remove_channels
    )
    assert dense[1] != plan.layers[2].mlp_channels  # dense statistics would have chosen differently


@pytest.mark.parametrize(("kind", "ratio"), [("llama3-gqa-hd32", 0.3), ("qwen2-bias-hd64", 0.5)])
def test_uniform_counts_ratio_and_surgery(kind, ratio):
    model = tiny(kind)
    wanda = get_method("wanda-sp")
    config = wanda.config({})
    scores = wanda.score(model, calibration(), config)
    assert torch.equal(scores.tensors["input_ids"], calibration())
    plan = wanda.select(scores, model, ratio, config)
    adapter = get_adapter(model)
    assert len({len(lp.kv_heads) for lp in plan.layers.values()}) == 1
    assert len({len(lp.mlp_channels) for lp in plan.layers.values()}) == 1
    assert len(plan.layers) == adapter.num_layers and not plan.compensation
    pruned = apply_plan(copy.deepcopy(model), plan)
    assert abs(achieved_ratios(pruned, model)["decoder_ratio"] - ratio) <= 0.02
    ids = torch.randint(0, VOCAB, (2, 8), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(
            pruned(ids).logits, mask_plan(model, plan)(ids).logits, atol=1e-5, rtol=1e-4
        )


def test_native_pruning_ratio_floors_per_layer_counts():
    model = tiny("llama3-gqa-hd32")
    wanda = get_method("wanda-sp")
    config = wanda.config({"budget": "native"})
    plan = wanda.select(wanda.score(model, calibration(4, 8), config), model, 0.3, config)
    for lp in plan.layers.values():
        assert len(lp.kv_heads) == 4 - 1  # floor(0.3 * 4) KV groups removed
        assert len(lp.mlp_channels) == 256 - 76  # floor(0.3 * 256) channels removed
    assert plan.notes["budget"] == "native"


def test_ratio_zero_is_the_dense_model():
    model = tiny("qwen2-bias-hd64")
    wanda = get_method("wanda-sp")
    config = wanda.config({})
    plan = wanda.select(wanda.score(model, calibration(2, 8), config), model, 0.0, config)
    assert all(lp == LayerPlan() for lp in plan.layers.values())
    assert plan.notes["achieved_decoder_ratio"] == 0


def test_bad_input_is_refused_before_scoring():
    wanda = get_method("wanda-sp")
    model = tiny("llama3-gqa-hd32")
    config = wanda.config({})
    for ratio in (1.0, -0.2):
        with pytest.raises(PrunebenchError, match="ratio"):
            wanda.check_ratio(model, ratio, config)
    with pytest.raises(PrunebenchError, match="did you mean budget"):
        wanda.config({"budgt": "native"})
    with pytest.raises(PrunebenchError, match="budget"):
        wanda.config({"budget": "params"})
    with pytest.raises(PrunebenchError, match="calibration"):
        wanda.score(model, torch.zeros(0, 8, dtype=torch.long), config)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=VOCAB))
    with pytest.raises(PrunebenchError, match="gpt2"):
        wanda.check_model(gpt2)


# ---- the demo model ---------------------------------------------------------------------------

DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"


@pytest.mark.slow
@pytest.mark.skipif(
    not (DEMO / "model" / "model.safetensors").is_file(), reason="the demo model is not built"
)
def test_demo_ratios_and_perplexity():
    model, tokenizer = load_pretrained(DEMO / "model")
    calib = calibration_samples(tokenizer, load_text(str(DEMO / "corpus"), "train"), 32, 128, 0)
    wanda = get_method("wanda-sp")
    config = wanda.config({"nsamples": 32})
    scores = wanda.score(model, calib, config)
    test_text = load_text(str(DEMO / "corpus"), "test")
    for ratio in (0.1, 0.4):  # no KV group removed at 0.1 (r < 1/4), one at 0.4
        pruned = apply_plan(copy.deepcopy(model), wanda.select(scores, model, ratio, config))
        assert abs(achieved_ratios(pruned, model)["decoder_ratio"] - ratio) <= 0.02
        ppl = perplexity(pruned, tokenizer, test_text, seqlen=128, max_windows=16, progress=False)["ppl"]
        assert math.isfinite(ppl)
