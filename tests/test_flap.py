"""FLAP: fluctuation statistics, metrics, threshold search, compensation, GQA/biases, bad input."""

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
from prunebench.methods import Scores, available_methods, get_method
from prunebench.methods.channel_stats import InputStats
from prunebench.methods.flap import (
    budget_cut,
    channel_metric,
    head_weight,
    keep_above,
    keep_uniform,
    native_cut,
    rank,
    standardize,
)
from prunebench.models import apply_plan, get_adapter, load_pretrained, save_pretrained
from prunebench.models.counting import achieved_ratios
from prunebench.plan import PruningPlan

VOCAB = 96


def tiny(kind: str) -> torch.nn.Module:
    """Llama MHA with head_dim 64, Llama-3-like GQA with head_dim 32, Qwen2 (q/k/v biases) with head_dim 32."""
    if kind == "llama-mha-hd64":
        return make_tiny_model(
            "llama", hidden_size=64, intermediate_size=192, num_hidden_layers=2, head_dim=64
        )
    if kind == "llama3-gqa-hd32":
        return make_tiny_model(
            "llama3",
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=3,
            num_attention_heads=8,
            num_key_value_heads=2,
            head_dim=32,
        )
    return make_tiny_model("qwen2", hidden_size=64, intermediate_size=192, num_hidden_layers=2, head_dim=32)


def calibration(n: int = 12, t: int = 16) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, t), generator=torch.Generator().manual_seed(1))


# ---- fluctuation statistics -------------------------------------------------------------------


def official_recursion(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FLAP's per-sample ``add_batch`` written out literally (the aliased mean included)."""
    channels = samples.shape[-1]
    baseline = torch.zeros(channels, dtype=torch.float64)
    fluc = torch.zeros(channels, dtype=torch.float64)
    scaler = torch.zeros(channels, dtype=torch.float64)
    for n, x in enumerate(samples):
        inp = x.t()
        old = baseline  # an alias, as in the official code
        baseline *= n / (n + 1)
        baseline += inp.mean(dim=1) / (n + 1)
        scaler *= n / (n + 1)
        scaler += inp.pow(2).sum(dim=1) / (n + 1)
        if n == 0:
            fluc = torch.zeros(channels, dtype=torch.float64)
        else:
            fluc *= (n - 1) / n
            fluc += ((inp - baseline[:, None]) * (inp - old[:, None])).sum(dim=1) / (n + 1)
    return baseline, fluc, scaler


def test_fluctuation_hand_example():
    # one channel, two samples of two tokens: [1, 3] then [5, 7]
    stats = InputStats(1)
    stats.update(torch.tensor([[[1.0], [3.0]], [[5.0], [7.0]]]))
    assert stats.mean().item() == pytest.approx(4.0)  # (2 + 6) / 2
    # first sample contributes nothing; second: ((2-1)/2) * ((5-4)^2 + (7-4)^2) / (2-1) = 5
    assert stats.fluctuation().item() == pytest.approx(5.0)
    assert stats.mean_sq_norm().item() == pytest.approx((1 + 9 + 25 + 49) / 2)


def test_fluctuation_closed_form_matches_official_recursion_across_batches():
    samples = torch.randn(7, 5, 6, dtype=torch.float64) * 3 + 1
    stats = InputStats(6)
    for chunk in samples.split(3):  # batch boundaries must not matter
        stats.update(chunk)
    mean, fluc, scaler = official_recursion(samples)
    torch.testing.assert_close(stats.mean(), mean)
    torch.testing.assert_close(stats.fluctuation(), fluc)
    torch.testing.assert_close(stats.mean_sq_norm(), scaler)
    # the alias matters: a textbook variance gives different numbers
    assert not torch.allclose(fluc, samples.reshape(-1, 6).var(dim=0) * 5)


def test_metrics_on_hand_numbers():
    stats = InputStats(2)
    stats.update(torch.tensor([[[1.0, 0.0], [3.0, 2.0]], [[5.0, 0.0], [7.0, 2.0]]]))
    weight = torch.tensor([[1.0, -2.0], [3.0, 4.0]])
    fluc = stats.fluctuation()  # channel 0: 5; channel 1: (1/2)*((0-1)^2+(2-1)^2) = 1
    torch.testing.assert_close(fluc, torch.tensor([5.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(channel_metric("IFV", stats, weight), fluc)
    torch.testing.assert_close(
        channel_metric("WIFV", stats, weight), torch.tensor([50.0, 20.0], dtype=torch.float64)
    )
    rho = torch.tensor([42.0, 4.0], dtype=torch.float64)  # mean over samples of sum_t x^2
    expected = (weight.abs().double() * rho.sqrt()).mean(dim=0)
    torch.testing.assert_close(channel_metric("WIFN", stats, weight), expected)


# ---- standardisation and threshold search ----------------------------------------------------


def test_standardize_rows_and_constant_row_error():
    z = standardize(torch.tensor([[1.0, 2.0, 3.0], [10.0, 10.0, 40.0]]))
    torch.testing.assert_close(z[0], torch.tensor([-1.0, 0.0, 1.0]))
    torch.testing.assert_close(z[1], torch.tensor([-0.57735, -0.57735, 1.154701]), atol=1e-5, rtol=0)
    with pytest.raises(PrunebenchError, match="constant"):
        standardize(torch.tensor([[1.0, 2.0], [3.0, 3.0]]))


def test_head_weight_truncates_like_the_official_integer_tensor():
    assert head_weight(1, 128) == 170  # 512/3 truncated, MHA LLaMA
    assert head_weight(1, 64) == 85
    assert head_weight(4, 128) == 426  # (2*4+2)*128/3 = 426.67, Llama-3-8B groups
    assert head_weight(4, 32) == 106


def test_native_cut_worked_example():
    # one layer, 2 heads (weight 3 each) and 4 channels (weight 1)
    attn = torch.tensor([[0.9, -0.5]])
    mlp = torch.tensor([[1.2, 0.1, -0.3, -1.0]])
    sorted_scores, order = rank(attn, mlp)
    # sorted: 1.2(c) 0.9(h) 0.1(c) -0.3(c) -0.5(h) -1.0(c); cumsum 1 4 5 6 9 10; sum 10
    k = native_cut(order, attn.numel(), 3, 0.5)  # |cumsum - 5| is smallest at index 2
    assert k == 2
    attn_keep, mlp_keep = keep_above(attn, mlp, sorted_scores, k)
    # tau = 0.1 and the rule is strict: the element at k* (channel 1) is pruned
    assert attn_keep.tolist() == [[True, False]]
    assert mlp_keep.tolist() == [[True, False, False, False]]


def test_budget_cut_and_strict_ties():
    costs = torch.tensor([3.0, 1.0, 1.0, 3.0, 1.0])  # in ranked order, total 9
    # keeping k best leaves 9, 6, 5, 4, 1, 0 removed; 4 is closest to 4.2
    assert budget_cut(costs, 4.2) == 3
    assert budget_cut(costs, 0.0) == 5  # keep everything
    attn = torch.tensor([[0.5, 0.2]])
    mlp = torch.tensor([[0.2, 0.9]])
    sorted_scores, _ = rank(attn, mlp)
    attn_keep, mlp_keep = keep_above(attn, mlp, sorted_scores, 2)  # tau = 0.2: both ties go
    assert attn_keep.tolist() == [[True, False]] and mlp_keep.tolist() == [[False, True]]
    attn_keep, mlp_keep = keep_above(attn, mlp, sorted_scores, 4)
    assert attn_keep.all() and mlp_keep.all()


def test_keep_uniform_official_rule():
    scores = torch.tensor([[3.0, 1.0, 2.0, 5.0], [1.0, 1.0, 0.0, 4.0]])
    keep = keep_uniform(scores, 2)  # tau = 3rd smallest; keep >= tau (ties kept)
    assert keep.tolist() == [[True, False, False, True], [True, True, False, True]]
    assert not keep_uniform(scores, 4).any()


# ---- end to end on tiny models ----------------------------------------------------------------


def dense_with_means(model, plan, scores):
    """The dense model whose removed o_proj/down_proj input channels are overwritten by their calibration mean."""
    reference = copy.deepcopy(model)
    adapter = get_adapter(reference)
    width = adapter.group_size * adapter.head_dim
    for layer, lp in plan.layers.items():
        if lp.kv_heads is not None:
            keep = torch.zeros(adapter.num_kv_heads, dtype=torch.bool)
            keep[lp.kv_heads] = True
            _overwrite(
                adapter.attention(layer).o_proj,
                keep.repeat_interleave(width),
                scores.tensors["attn_mean"][layer],
            )
        if lp.mlp_channels is not None:
            keep = torch.zeros(adapter.intermediate_size, dtype=torch.bool)
            keep[lp.mlp_channels] = True
            _overwrite(adapter.mlp(layer).down_proj, keep, scores.tensors["mlp_mean"][layer])
    return reference


def _overwrite(module, keep, mean):
    def hook(_module, args):
        x = args[0].clone()
        x[..., ~keep] = mean[~keep].to(x.dtype)
        return (x,)

    module.register_forward_pre_hook(hook)


@pytest.mark.parametrize("kind", ["llama-mha-hd64", "llama3-gqa-hd32", "qwen2-bias-hd32"])
def test_pruned_model_equals_dense_with_removed_channels_at_their_mean(kind):
    model = tiny(kind)
    flap = get_method("flap")
    config = flap.config({})
    scores = flap.score(model, calibration(), config)
    plan = flap.select(scores, model, 0.3, config)
    assert plan.compensation  # something was removed, so biases were computed
    pruned = apply_plan(copy.deepcopy(model), plan)
    reference = dense_with_means(model, plan, scores)
    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(pruned(ids).logits, reference(ids).logits, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(pruned(ids).logits, model(ids).logits, atol=1e-3)
    ratio = achieved_ratios(pruned, model)["decoder_ratio"]
    assert ratio == pytest.approx(plan.notes["achieved_decoder_ratio"])


@pytest.mark.parametrize("kind", ["llama3-gqa-hd32", "qwen2-bias-hd32"])
def test_without_bias_compensation_removed_channels_contribute_nothing(kind):
    model = tiny(kind)
    flap = get_method("flap")
    scores = flap.score(model, calibration(), flap.config({}))
    plan = flap.select(scores, model, 0.3, flap.config({"bias_compensation": "false"}))
    assert plan.compensation is None
    zero_means = {k: torch.zeros_like(v) if k.endswith("_mean") else v for k, v in scores.tensors.items()}
    reference = dense_with_means(model, plan, Scores(tensors=zero_means, meta=scores.meta))
    pruned = apply_plan(copy.deepcopy(model), plan)
    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(pruned(ids).logits, reference(ids).logits, atol=1e-5, rtol=1e-4)
    compensated = flap.select(scores, model, 0.3, flap.config({}))
    assert compensated.compensation
    assert plan.notes["achieved_decoder_ratio"] == pytest.approx(0.3, abs=0.02)


def test_scores_match_direct_statistics_on_o_proj_and_down_proj():
    model = tiny("llama3-gqa-hd32")
    flap = get_method("flap")
    calib = calibration(6, 10)
    scores = flap.score(model, calib, flap.config({"batch_size": 4}))
    captured = {}
    layer = model.model.layers[1]
    for name, module in (("attn", layer.self_attn.o_proj), ("mlp", layer.mlp.down_proj)):
        module.register_forward_pre_hook(lambda _m, a, name=name: captured.setdefault(name, []).append(a[0]))
    with torch.no_grad():
        for row in calib:  # one sample at a time, as the official loop
            model(row[None])
    for name, weight in (("attn", layer.self_attn.o_proj.weight), ("mlp", layer.mlp.down_proj.weight)):
        x = torch.cat(captured[name]).double()
        mean, fluc, _ = official_recursion(x)
        metric = fluc * weight.double().pow(2).sum(dim=0)
        expected = metric.pow(2) if name == "attn" else metric  # attention scores are squared
        torch.testing.assert_close(scores.tensors[f"{name}_score"][1], expected, rtol=1e-4, atol=1e-8)
        torch.testing.assert_close(scores.tensors[f"{name}_mean"][1], mean, rtol=1e-4, atol=1e-7)


def test_gqa_heads_go_by_kv_group_and_ratio_near_target():
    model = tiny("llama3-gqa-hd32")
    flap = get_method("flap")
    config = flap.config({})
    scores = flap.score(model, calibration(), config)
    for target in (0.2, 0.4):
        plan = flap.select(scores, model, target, config)
        assert abs(plan.notes["achieved_decoder_ratio"] - target) <= 0.02
        pruned = apply_plan(copy.deepcopy(model), plan)
        assert abs(achieved_ratios(pruned, model)["decoder_ratio"] - target) <= 0.02
        adapter = get_adapter(pruned)
        for i in range(adapter.num_layers):
            attn = adapter.attention(i)
            if attn is not None:  # q has g query heads per remaining KV head
                assert attn.q_proj.out_features == 4 * attn.k_proj.out_features
    assert plan.notes["head_weight"] == head_weight(4, 32)
    assert plan.notes["budget"] == "decoder" and plan.notes["extensions"]


def test_a_layer_can_lose_every_head_and_keeps_its_constant():
    model = tiny("llama3-gqa-hd32")
    flap = get_method("flap")
    config = flap.config({})
    real = flap.score(model, calibration(), config)
    attn = real.tensors["attn_score"].clone()
    attn[1] = torch.arange(64, dtype=torch.float64).repeat(4)  # identical groups: every group scores 0
    mlp = torch.ones_like(real.tensors["mlp_score"])
    mlp[:, :26] = 0  # most channels standardise to about +0.3, a few to about -3
    scores = Scores(tensors={**real.tensors, "attn_score": attn, "mlp_score": mlp}, meta=real.meta)
    plan = flap.select(scores, model, 0.5, config)
    assert plan.layers[1].kv_heads == []
    assert "o_proj" in plan.compensation[1]
    pruned = apply_plan(copy.deepcopy(model), plan)
    assert get_adapter(pruned).attention(1) is None
    reference = dense_with_means(model, plan, scores)
    ids = torch.randint(0, VOCAB, (1, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(pruned(ids).logits, reference(ids).logits, atol=1e-5, rtol=1e-4)


def test_native_pruning_ratio_uses_the_official_formula():
    model = tiny("llama-mha-hd64")
    flap = get_method("flap")
    scores = flap.score(model, calibration(), flap.config({}))
    plan = flap.select(scores, model, 0.5, flap.config({"budget": "native"}))
    assert plan.notes["budget"] == "native" and plan.notes["native_pruning_ratio"] == 0.5
    total = 2 * (4 * head_weight(1, 64) + 192)
    # the kept weight is within one element (a head) of (1 - r) of the total
    assert abs(plan.notes["native_weight_removed"] - 0.5) <= head_weight(1, 64) / total


def test_ul_um_prunes_the_same_counts_in_every_layer():
    model = tiny("llama3-gqa-hd32")
    flap = get_method("flap")
    config = flap.config({"structure": "UL-UM"})
    scores = flap.score(model, calibration(), config)
    plan = flap.select(scores, model, 0.25, config)
    assert abs(plan.notes["achieved_decoder_ratio"] - 0.25) <= 0.02
    assert len({len(plan.layers[i].mlp_channels) for i in range(3)}) == 1
    # the official floor: r < 1/2 removes none of the 2 KV groups, and r is recorded
    r = plan.notes["native_pruning_ratio"]
    assert 0 < r < 0.5 and plan.notes["removed_kv_groups_per_layer"] == 0
    assert all(plan.layers[i].kv_heads is None for i in range(3))
    assert plan.notes["removed_channels_per_layer"] == int(256 * r) == 256 - len(plan.layers[0].mlp_channels)
    native = flap.select(scores, model, 0.5, flap.config({"structure": "UL-UM", "budget": "native"}))
    for i in range(3):
        assert len(native.layers[i].kv_heads) == 1  # floor(0.5 * 2) groups removed
        assert len(native.layers[i].mlp_channels) == 256 - 128


def test_ratio_zero_keeps_everything():
    model = tiny("qwen2-bias-hd32")
    flap = get_method("flap")
    scores = flap.score(model, calibration(), flap.config({}))
    plan = flap.select(scores, model, 0.0, flap.config({}))
    assert plan.layers == {} and not plan.compensation


# ---- bad input ---------------------------------------------------------------------------------


def test_bad_input_is_refused_before_scoring():
    flap = get_method("flap")
    model = tiny("llama-mha-hd64")
    config = flap.config({})
    for ratio in (1.0, -0.1, 1.5):
        with pytest.raises(PrunebenchError, match="ratio"):
            flap.check_ratio(model, ratio, config)
    with pytest.raises(PrunebenchError, match="did you mean metric"):
        flap.config({"metrc": "IFV"})
    with pytest.raises(PrunebenchError, match="metric"):
        flap.config({"metric": "L2"})
    with pytest.raises(PrunebenchError, match="structure"):
        flap.config({"structure": "UL-MM"})
    with pytest.raises(PrunebenchError, match="budget"):
        flap.config({"budget": "params"})
    with pytest.raises(PrunebenchError, match="nsamples"):
        flap.config({"nsamples": 1})
    with pytest.raises(PrunebenchError, match="at least 2"):
        flap.score(model, calibration(1, 16), config)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=VOCAB))
    with pytest.raises(PrunebenchError, match="gpt2"):
        flap.check_model(gpt2)


def test_scores_from_another_metric_are_refused():
    model = tiny("llama-mha-hd64")
    flap = get_method("flap")
    scores = flap.score(model, calibration(4, 8), flap.config({"metric": "IFV"}))
    with pytest.raises(PrunebenchError, match="metric"):
        flap.select(scores, model, 0.2, flap.config({}))


# ---- the generic CLI --------------------------------------------------------------------------


def test_cli_score_then_prune_and_reload(tmp_path, tiny_tokenizer, tiny_text, capsys):
    from prunebench.cli import main

    model = make_tiny_model("qwen2", vocab_size=len(tiny_tokenizer), intermediate_size=128)
    save_pretrained(model, tmp_path / "dense", tokenizer=tiny_tokenizer)
    (tmp_path / "train.txt").write_text(tiny_text)
    common = ["--model", str(tmp_path / "dense"), "--method", "flap"]
    calib = ["--calib", str(tmp_path / "train.txt"), "--nsamples", "6", "--seqlen", "16"]
    assert main(["score", *common, *calib, "--out", str(tmp_path / "scores")]) == 0
    assert (
        main(
            [
                "prune",
                *common,
                "--ratio",
                "0.3",
                "--scores",
                str(tmp_path / "scores"),
                "--out",
                str(tmp_path / "p"),
            ]
        )
        == 0
    )
    pruned, _ = load_pretrained(tmp_path / "p")
    plan = PruningPlan.load(tmp_path / "p" / "plan.json")
    assert plan.compensation and abs(plan.achieved["decoder_ratio"] - 0.3) <= 0.02
    ids = torch.randint(0, len(tiny_tokenizer), (1, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the reloaded checkpoint keeps the compensation biases
        torch.testing.assert_close(pruned(ids).logits, apply_plan(copy.deepcopy(model), plan)(ids).logits)
    bad = main(
        [
            "prune",
            *common,
            "--ratio",
            "0.3",
            "--param",
            "metrc=IFV",
            "--scores",
            str(tmp_path / "scores"),
            "--out",
            str(tmp_path / "q"),
        ]
    )
    assert bad == 2 and "did you mean metric" in capsys.readouterr().err
    (tmp_path / "short.txt").write_text("too short")
    short = ["--calib", str(tmp_path / "short.txt"), "--nsamples", "6", "--seqlen", "16"]
    assert main(["score", *common, *short, "--out", str(tmp_path / "s2")]) == 2
    assert (
        "one sample of seqlen=16 tokens needs at least 16" in capsys.readouterr().err
        and not (tmp_path / "s2").exists()
    )


# ---- the demo model ---------------------------------------------------------------------------

DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"
needs_demo = pytest.mark.skipif(
    not (DEMO / "model" / "model.safetensors").is_file(), reason="the demo model is not built"
)


@pytest.fixture(scope="module")
def demo():
    """The demo model, 64 calibration windows of 128 tokens from its train split, and FLAP scores."""
    model, tokenizer = load_pretrained(DEMO / "model")
    calib = calibration_samples(tokenizer, load_text(str(DEMO / "corpus"), "train"), 64, 128, 0)
    flap = get_method("flap")
    scores = flap.score(model, calib, flap.config({"nsamples": 64}))
    return model, tokenizer, calib, scores


def demo_ppl(model, tokenizer) -> float:
    """Perplexity on the first 16 windows of 128 tokens of the demo test split."""
    text = load_text(str(DEMO / "corpus"), "test")
    return perplexity(model, tokenizer, text, seqlen=128, max_windows=16, progress=False)["ppl"]


@pytest.mark.slow
@needs_demo
@pytest.mark.parametrize("ratio", [0.2, 0.4])
def test_demo_ratio_and_perplexity(demo, ratio):
    model, tokenizer, _, scores = demo
    flap = get_method("flap")
    plan = flap.select(scores, model, ratio, flap.config({"nsamples": 64}))
    pruned = apply_plan(copy.deepcopy(model), plan)
    assert abs(achieved_ratios(pruned, model)["decoder_ratio"] - ratio) <= 0.02
    assert math.isfinite(demo_ppl(pruned, tokenizer))


@pytest.mark.slow
@needs_demo
def test_demo_flap_beats_magnitude_sp_at_0_4(demo):
    if "magnitude-sp" not in available_methods():
        pytest.skip("magnitude-sp is not merged")
    model, tokenizer, calib, scores = demo
    flap, magnitude = get_method("flap"), get_method("magnitude-sp")
    flap_plan = flap.select(scores, model, 0.4, flap.config({"nsamples": 64}))
    mag_config = magnitude.config({})
    mag_plan = magnitude.select(magnitude.score(model, calib, mag_config), model, 0.4, mag_config)
    flap_ppl = demo_ppl(apply_plan(copy.deepcopy(model), flap_plan), tokenizer)
    mag_ppl = demo_ppl(apply_plan(copy.deepcopy(model), mag_plan), tokenizer)
    assert flap_ppl < mag_ppl
