"""Policy-gradient pruning: masks, estimator, projection, initialisation, budget, determinism, bad input."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import make_tiny_model
from transformers import GPT2Config, GPT2LMHeadModel

from prunebench.cli import main
from prunebench.errors import PrunebenchError
from prunebench.methods import get_method
from prunebench.methods.channel_stats import InputStats, attach
from prunebench.methods.policy_gradient import (
    MaskHooks,
    final_keep,
    initial_scores,
    learning_rates,
    pg_gradient,
    project,
    sample_masks,
    sigmap,
)
from prunebench.methods.wanda_sp import wanda_scores
from prunebench.methods.width_budget import TOLERANCE
from prunebench.models import apply_plan, get_adapter, mask_plan, save_pretrained
from prunebench.models.counting import achieved_ratios

VOCAB = 96
METHOD = get_method("policy-gradient")


def tiny(kind: str = "gqa", seed: int = 0) -> torch.nn.Module:
    """GQA: 8 query heads of 8 in 4 KV groups (g = 2); MHA: 8 heads of 4. Hidden 32, 96 channels, 4 layers."""
    if kind == "mha":
        return make_tiny_model(
            "llama", seed=seed, num_attention_heads=8, num_key_value_heads=8, head_dim=4, intermediate_size=96
        )
    return make_tiny_model(
        "llama3", seed=seed, num_attention_heads=8, num_key_value_heads=4, head_dim=8, intermediate_size=96
    )


def rows(n: int = 8, t: int = 32, seed: int = 2) -> torch.Tensor:
    return torch.randint(3, VOCAB, (n, t), generator=torch.Generator().manual_seed(seed))


def config(**params):
    base = {
        "nsamples": 4,
        "seqlen": 32,
        "train_seqlen": 16,
        "steps": 4,
        "batch_size": 2,
        "init_batch_size": 4,
    }
    return METHOD.config({**base, **params})


def plan_for(model, ratio, **params):
    cfg = config(**params)
    return METHOD.select(METHOD.score(model, rows(), cfg), model, ratio, cfg)


# --- masks, estimator, projection ---------------------------------------------------------------------


def test_hook_masks_equal_zeroed_columns_and_draw_in_the_official_order():
    model = tiny("gqa")
    adapter = get_adapter(model)
    attn = torch.tensor([[1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 1, 1], [1, 0, 0, 1]], dtype=torch.bool)
    mlp = torch.rand(4, 96, generator=torch.Generator().manual_seed(0)) > 0.4
    ids = rows(2, 12)
    with torch.no_grad():
        dense = model(ids).logits
    with MaskHooks(adapter) as hooks, torch.no_grad():
        hooks.attn, hooks.mlp = attn, mlp
        hooked = model(ids).logits
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for i in range(4):
            cols = attn[i].repeat_interleave(adapter.group_size * adapter.head_dim)
            zeroed.model.layers[i].self_attn.o_proj.weight[:, ~cols] = 0
            zeroed.model.layers[i].mlp.down_proj.weight[:, ~mlp[i]] = 0
        torch.testing.assert_close(hooked, zeroed(ids).logits, rtol=0, atol=0)
        assert torch.equal(model(ids).logits, dense)  # the hooks are gone after the block
    scores = (torch.full((2, 3), 0.5), torch.full((2, 5), 0.5))
    a, m = sample_masks(*scores, torch.Generator().manual_seed(7))
    draws = torch.rand(16, generator=torch.Generator().manual_seed(7))  # layer 0: 3 then 5, layer 1: 3 then 5
    assert torch.equal(a, torch.stack([draws[0:3], draws[8:11]]) < 0.5)
    assert torch.equal(m, torch.stack([draws[3:8], draws[11:16]]) < 0.5)


def test_estimator_on_hand_numbers():
    s = torch.tensor([0.5, 0.2, 1.0])
    masks = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    adv = torch.tensor([0.3, -0.1])
    official = pg_gradient(s, masks, adv, 2, "official")
    exact = pg_gradient(s, masks, adv, 2, "score_function")
    d = ((s + 1e-7) * (1 - s + 1e-7)).sqrt()
    expected = (0.3 * (masks[0] - s) + -0.1 * (masks[1] - s)) / d
    torch.testing.assert_close(official, expected)
    torch.testing.assert_close(exact, expected / d)
    assert official[2] == 0  # a score at 1 samples 1: no gradient
    assert pg_gradient(s, masks, adv, 3, "official").allclose(expected / 2)  # divided by K - 1


def test_projection_sums_to_the_budget_and_leaves_a_pool_under_it_alone():
    scores = torch.rand(6, 50, generator=torch.Generator().manual_seed(1)) * 1.2  # clipped sum about 180
    for keep in (0.2, 0.4, 0.55):
        projected = project(scores, keep)
        assert abs(float(projected.sum()) - scores.numel() * keep) < 1e-3
        assert float(projected.min()) >= 0 and float(projected.max()) <= 1
        shift = scores - projected  # one shift v for every unit not clipped at 0 or 1
        inside = (projected > 0) & (projected < 1)
        assert torch.allclose(shift[inside], shift[inside][0].expand(int(inside.sum())), atol=1e-6)
    low = torch.full((4, 5), 0.2)
    assert torch.equal(project(low, 0.5), low)


def test_final_mask_keeps_exactly_the_budget_even_with_ties_at_zero():
    scores = torch.zeros(3, 10)
    scores[0, :4] = torch.tensor([0.9, 0.8, 0.7, 0.6])
    keep = final_keep(scores, 0.2)  # 30 - int(30 * 0.8) = 6 kept; 26 zeros tie for the last two places
    assert int(keep.sum()) == 6
    assert keep[0, :4].all()
    assert keep.flatten().nonzero().flatten().tolist() == [0, 1, 2, 3, 28, 29]  # ties: lower index goes first


def test_learning_rate_is_cosine_from_the_base_rate_to_zero():
    lrs = learning_rates(2e-3, 10)
    assert lrs[0] == 2e-3
    for t, lr in enumerate(lrs):
        assert lr == pytest.approx(2e-3 * (1 + math.cos(math.pi * t / 10)) / 2, abs=1e-15)


# --- initialisation -------------------------------------------------------------------------------------


def test_sigmap_shifts_the_mean_to_the_keep_ratio():
    metric = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0])
    s = sigmap(metric, 0.6)
    z = (metric - metric.mean()) / metric.std(unbiased=True)
    torch.testing.assert_close(s, (torch.sigmoid(z) - torch.sigmoid(z).mean() + 0.6).clamp(0, 1))
    assert float(s.mean()) == pytest.approx(0.6, abs=1e-6)
    assert torch.equal(s.argsort(), metric.argsort())


@pytest.mark.parametrize("kind", ["mha", "gqa"])
def test_first_layer_init_uses_the_models_head_dim_and_the_wanda_statistic(kind):
    model = tiny(kind)
    adapter = get_adapter(model)
    ids = rows(4, 16)
    attn, _mlp, extra = initial_scores(adapter, ids, 0.75, 2)
    o_proj, down_proj = adapter.attention(0).o_proj, adapter.mlp(0).down_proj
    stats_o, stats_d = InputStats(o_proj.in_features), InputStats(down_proj.in_features)
    handles = [attach(o_proj, stats_o), attach(down_proj, stats_d)]
    with torch.no_grad():
        model(ids)
    for h in handles:
        h.remove()
    g, hd = adapter.group_size, adapter.head_dim
    heads = wanda_scores(stats_o, o_proj.weight).view(-1, hd).sum(-1)  # head_dim 4 or 8, never 128
    torch.testing.assert_close(extra["attn_metric"][0], heads.view(-1, g).mean(-1).float())
    torch.testing.assert_close(extra["mlp_metric"][0], wanda_scores(stats_d, down_proj.weight).float())
    torch.testing.assert_close(attn[0], sigmap(extra["attn_metric"][0], 0.75))
    assert int(extra["attn_init"][0].sum()) == adapter.num_kv_heads - int(0.25 * adapter.num_kv_heads)
    assert int(extra["mlp_init"][0].sum()) == 96 - int(96 * 0.25)


# --- selection ------------------------------------------------------------------------------------------


def test_a_useless_kv_group_and_channel_are_dropped_first():
    model = tiny("mha")  # 8 KV groups per layer, 32 in the pool; ratio 0.05 removes one of them
    adapter = get_adapter(model)
    hd = adapter.head_dim
    with torch.no_grad():  # KV group 5 of layer 2 and channel 7 of layer 1 contribute nothing
        adapter.attention(2).o_proj.weight[:, 5 * hd : 6 * hd] = 0
        adapter.mlp(1).down_proj.weight[:, 7] = 0
    plan = plan_for(model, 0.05)
    assert plan.notes["removed_kv_groups"] == 1
    assert plan.layers[2].kv_heads == [h for h in range(8) if h != 5]
    assert all(lp.kv_heads is None for i, lp in plan.layers.items() if i != 2)
    assert 7 not in plan.layers[1].mlp_channels


@pytest.mark.parametrize(("kind", "ratio"), [("gqa", 0.25), ("gqa", 0.4), ("mha", 0.3)])
def test_budget_reached_to_the_unit_and_the_physical_model_equals_the_masked_one(kind, ratio):
    model = tiny(kind)
    adapter = get_adapter(model)
    plan = plan_for(model, ratio)
    keep = 1 - ratio
    n_groups, n_channels = 4 * adapter.num_kv_heads, 4 * 96
    assert plan.notes["removed_kv_groups"] == int(n_groups * (1 - keep))
    assert plan.notes["removed_channels"] == int(n_channels * (1 - keep))
    kept_groups = sum(adapter.num_kv_heads if lp is None else len(lp) for lp in _parts(plan, "kv_heads"))
    assert kept_groups == n_groups - int(n_groups * (1 - keep))
    ids = rows(2, 10)
    masked = mask_plan(model, plan)(ids).logits
    pruned = apply_plan(copy.deepcopy(model), plan)
    torch.testing.assert_close(pruned(ids).logits, masked, rtol=1e-5, atol=1e-5)
    achieved = achieved_ratios(pruned, model)["decoder_ratio"]
    assert achieved == pytest.approx(plan.notes["achieved_decoder_ratio"], abs=1e-12)
    assert abs(achieved - ratio) <= TOLERANCE
    assert plan.notes["steps_updated"] == 4 and plan.notes["budget"]["passes_over_blocks"] == 0.5


def _parts(plan, part):
    return [getattr(plan.layers[i], part) if i in plan.layers else None for i in range(4)]


def test_training_moves_the_scores_and_keeps_them_in_the_budget(monkeypatch):
    import prunebench.methods.policy_gradient as pg

    seen = {}
    real = pg.train

    def spy(adapter, attn, mlp, blocks, keep, cfg):
        before = (attn.clone(), mlp.clone())
        log = real(adapter, attn, mlp, blocks, keep, cfg)
        seen.update(before=before, after=(attn.clone(), mlp.clone()), log=log)
        return log

    monkeypatch.setattr(pg, "train", spy)
    plan_for(tiny("gqa"), 0.25, steps=6, attn_lr=0.5, mlp_lr=0.5)
    for before, after in zip(seen["before"], seen["after"], strict=True):
        assert not torch.equal(before, after)
        assert float(after.sum()) <= after.numel() * 0.75 + 1e-3
        assert float(after.min()) >= 0 and float(after.max()) <= 1
    assert seen["log"].updated == 6


def test_an_emptied_sublayer_is_removed_or_keeps_its_best_unit(monkeypatch):
    import prunebench.methods.policy_gradient as pg

    def init(adapter, ids, keep, batch):  # layer 3's KV groups all score lowest
        attn = torch.full((4, 4), 0.9)
        attn[3] = torch.tensor([0.1, 0.05, 0.2, 0.15])
        return attn, torch.full((4, 96), 0.5), {}

    monkeypatch.setattr(pg, "initial_scores", init)
    plan = plan_for(tiny("gqa"), 0.25, steps=1, attn_lr=1e-9, mlp_lr=1e-9)
    assert plan.layers[3].kv_heads == [] and plan.notes["layers_without_kv_group"] == [3]
    plan = plan_for(tiny("gqa"), 0.25, steps=1, attn_lr=1e-9, mlp_lr=1e-9, empty_sublayer="keep_one")
    assert plan.layers[3].kv_heads == [2]


def test_same_seed_same_plan_other_seed_other_draws():
    model = tiny("gqa")
    first, second = (plan_for(model, 0.25, attn_lr=0.5, mlp_lr=0.5).to_json() for _ in range(2))
    assert first == second
    other = plan_for(model, 0.25, attn_lr=0.5, mlp_lr=0.5, seed=7).to_json()
    assert other["notes"]["mean_loss_first_step"] != first["notes"]["mean_loss_first_step"]


def test_every_adapter_family_runs(family):
    model = make_tiny_model(family, intermediate_size=96)
    plan = plan_for(model, 0.3)
    assert plan.notes["achieved_decoder_ratio"] > 0.2


# --- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"steps": 0}, "policy-gradient: steps must be at least 1, got 0"),
        ({"steps": -5}, "policy-gradient: steps must be at least 1, got -5"),
        ({"batch_size": 0}, "policy-gradient: batch_size must be at least 1, got 0"),
        ({"samples_per_step": 1}, "samples_per_step must be at least 2"),
        ({"attn_lr": 0}, "policy-gradient: attn_lr must be a positive number, got 0"),
        ({"estimator": "exact"}, "estimator must be one of official, score_function, got 'exact'"),
        ({"empty_sublayer": "floor"}, "empty_sublayer must be one of remove, keep_one"),
        ({"lr": 1e-3}, "unknown option 'lr'"),
    ],
)
def test_bad_options_are_named(params, message):
    with pytest.raises(PrunebenchError, match=message):
        METHOD.config(params)


def test_unreachable_ratio_and_unsupported_family_are_refused():
    model = make_tiny_model("llama3", intermediate_size=48)  # 8 KV groups in all: r=0.1 removes none
    with pytest.raises(
        PrunebenchError,
        match=r"policy-gradient: keeping 0.9 of the 8 KV groups and of the 192 MLP channels removes 0\.0\d\d "
        r"of the decoder parameters, not within 0.02 of ratio 0.1",
    ):
        METHOD.check_ratio(model, 0.1, config())
    with pytest.raises(PrunebenchError, match=r"ratio must be in \[0, 1\), got 1.0"):
        METHOD.check_ratio(model, 1.0, config())
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=VOCAB))
    with pytest.raises(PrunebenchError, match="unsupported model type 'gpt2'"):
        METHOD.check_model(gpt2, config())
    with pytest.raises(PrunebenchError, match="fewer than one training block of train_seqlen=16"):
        METHOD.score(tiny(), rows(4, 8), config())


def test_bad_input_is_one_line_before_any_weights_are_loaded(tmp_path, tiny_tokenizer, capsys, monkeypatch):
    model = make_tiny_model("llama3", vocab_size=len(tiny_tokenizer), intermediate_size=48)
    save_pretrained(model, tmp_path / "m", tokenizer=tiny_tokenizer)

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded despite bad input")

    monkeypatch.setattr("prunebench.steps.load_pretrained", refuse)
    prune = [
        "prune",
        "--model",
        str(tmp_path / "m"),
        "--method",
        "policy-gradient",
        "--out",
        str(tmp_path / "p"),
    ]
    for argv, message in (
        (
            [*prune, "--ratio", "0.3", "--param", "steps=0"],
            "policy-gradient: steps must be at least 1, got 0",
        ),
        ([*prune, "--ratio", "0.1"], "not within 0.02 of ratio 0.1"),
    ):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_scores_of_another_method_or_model_are_refused():
    model = tiny("gqa")
    cfg = config()
    with pytest.raises(PrunebenchError, match="not by policy-gradient"):
        wanda = get_method("wanda-sp")
        METHOD.select(wanda.score(model, rows(), wanda.config({})), model, 0.25, cfg)
    with pytest.raises(PrunebenchError, match="policy-gradient scores are for shapes"):
        METHOD.select(METHOD.score(model, rows(), cfg), tiny("mha"), 0.25, cfg)


def test_listed_by_prunebench_methods_as_ratio_dependent(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("policy-gradient"))
    assert "Policy-gradient" in line and "[expensive step per ratio]" in line
    assert "[expensive step per ratio]" not in next(
        line for line in out.splitlines() if line.startswith("flap")
    )
