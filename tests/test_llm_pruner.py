"""LLM-Pruner: Taylor group scores, the GQA alignment, official counts and layer range, calibration, bad input."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from conftest import SAMPLE_TEXT, make_tiny_model
from transformers import LlamaConfig, LlamaForCausalLM

from prunebench.cli import main
from prunebench.data import calibration_samples, load_text
from prunebench.errors import PrunebenchError
from prunebench.evaluation.perplexity import perplexity
from prunebench.methods import get_method
from prunebench.methods.llm_pruner import (
    check_rows,
    example_windows,
    removed_counts,
    taylor_saliences,
    unit_scores,
)
from prunebench.methods.width_budget import TOLERANCE, first_ratio
from prunebench.models import apply_plan, get_adapter, load_pretrained, mask_plan, save_pretrained
from prunebench.models.counting import (
    achieved_ratios,
    decoder_params,
    kv_group_params,
    mlp_channel_params,
    total_params,
)

REPO = Path(__file__).resolve().parents[1]
VOCAB = 96
M = 128
# Tiny models have six layers; layers 1-4 are pruned (the official range is 4..L-3, far too wide here).
RANGE = {"attn_layer_start": 1, "attn_layer_end": -1, "mlp_layer_start": 1, "mlp_layer_end": -1}
METHOD = get_method("llm-pruner")


def tiny(kind: str = "gqa", seed: int = 0) -> torch.nn.Module:
    """MHA: 4 heads of 8; GQA: 8 query heads of 8 in 2 KV groups (g = 4, as Llama-3-8B). Hidden 32,
    128 channels (so that the MLP holds most parameters and study ratios 0.1-0.4 are reachable), 6 layers."""
    if kind == "mha":
        return make_tiny_model("llama", seed=seed, num_hidden_layers=6, intermediate_size=M)
    return make_tiny_model(
        "llama3",
        seed=seed,
        num_hidden_layers=6,
        intermediate_size=M,
        num_attention_heads=8,
        num_key_value_heads=2,
    )


def calibration(n: int = 10, t: int = 16, seed: int = 2) -> torch.Tensor:
    return torch.randint(3, VOCAB, (n, t), generator=torch.Generator().manual_seed(seed))


def config(**params):
    return METHOD.config({**RANGE, **params})


def plan_for(model, ratio, **params):
    cfg = config(**params)
    return METHOD.select(METHOD.score(model, calibration(), cfg), model, ratio, cfg)


def kept(plan, layer, part, full):
    lp = plan.layers.get(layer)
    value = None if lp is None else getattr(lp, part)
    return list(range(full)) if value is None else value


def reference_terms(model, rows):
    """|W ⊙ ∂L/∂W| of every projection, from one plain forward/backward of the mean token loss."""
    model = copy.deepcopy(model)
    model(input_ids=rows, labels=rows).loss.backward()
    adapter = get_adapter(model)
    return [
        {
            name: (getattr(part, name).weight * getattr(part, name).weight.grad).abs().detach().double()
            for part, names in ((adapter.attention(i), "qkvo"), (adapter.mlp(i), ("gate", "up", "down")))
            for name in (f"{n}_proj" for n in names)
        }
        for i in range(adapter.num_layers)
    ]


# --- scores -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mha", "gqa"])
def test_param_first_scores_are_the_summed_taylor_terms_of_each_dependency_group(kind):
    model = tiny(kind)
    adapter = get_adapter(model)
    rows = calibration()
    saliences = taylor_saliences(adapter, rows, "param_first", batch_size=10)
    heads, channels = unit_scores(saliences, adapter, "sum", "consecutive")
    hd, g = adapter.head_dim, adapter.group_size
    for layer, terms in enumerate(reference_terms(model, rows)):
        for j in range(adapter.num_kv_heads):
            q_rows = slice(
                j * g * hd, (j + 1) * g * hd
            )  # the query heads j*g..j*g+g-1 that go with KV head j
            kv_rows = slice(j * hd, (j + 1) * hd)
            expected = (
                terms["q_proj"][q_rows].sum()
                + terms["k_proj"][kv_rows].sum()
                + terms["v_proj"][kv_rows].sum()
                + terms["o_proj"][:, q_rows].sum()
            )
            torch.testing.assert_close(heads[layer, j], expected, rtol=1e-5, atol=0)
        expected_mlp = terms["gate_proj"].sum(1) + terms["up_proj"].sum(1) + terms["down_proj"].sum(0)
        torch.testing.assert_close(channels[layer], expected_mlp, rtol=1e-5, atol=0)
    assert not any(p.requires_grad is False for p in model.parameters())  # flags restored
    assert all(p.grad is None for p in model.parameters())


def test_official_gqa_alignment_scores_a_kv_group_with_interleaved_query_heads():
    adapter = get_adapter(tiny("gqa"))  # 8 query heads, 2 KV groups: group j holds query heads 4j..4j+3
    n_kv, g, hd, layers = adapter.num_kv_heads, adapter.group_size, adapter.head_dim, adapter.num_layers
    for head in range(n_kv * g):
        saliences = {
            "q_proj": torch.zeros(layers, n_kv * g * hd, dtype=torch.float64),
            "o_proj": torch.zeros(layers, n_kv * g * hd, dtype=torch.float64),
            **{n: torch.zeros(layers, n_kv * hd, dtype=torch.float64) for n in ("k_proj", "v_proj")},
            **{n: torch.zeros(layers, M, dtype=torch.float64) for n in ("gate_proj", "up_proj", "down_proj")},
        }
        saliences["q_proj"][:, head * hd : (head + 1) * hd] = 1.0
        official, _ = unit_scores(saliences, adapter, "sum", "official")
        consecutive, _ = unit_scores(saliences, adapter, "sum", "consecutive")
        # llama3.py folds q with stride H_kv*hd: query head h counts for KV group h % H_kv ...
        assert official[0].nonzero().flatten().tolist() == [head % n_kv]
        # ... although DepGraph removes it with KV group h // g, which "consecutive" scores it with.
        assert consecutive[0].nonzero().flatten().tolist() == [head // g]


def test_mha_scores_do_not_depend_on_the_gqa_alignment():
    model = tiny("mha")
    saliences = taylor_saliences(get_adapter(model), calibration(), "param_first", 10)
    official = unit_scores(saliences, get_adapter(model), "sum", "official")
    consecutive = unit_scores(saliences, get_adapter(model), "sum", "consecutive")
    assert all(torch.equal(a, b) for a, b in zip(official, consecutive, strict=True))


def test_second_order_and_vector_wise_importance_on_one_matrix():
    model = tiny("mha")
    adapter = get_adapter(model)
    rows = calibration(n=4)
    w = adapter.mlp(2).up_proj.weight.detach().double()
    grads = []
    for row in rows:  # each sample alone: the official acc_grad = mean of squared per-sample gradients
        m = copy.deepcopy(model)
        m(input_ids=row[None], labels=row[None]).loss.backward()
        grads.append(m.model.layers[2].mlp.up_proj.weight.grad.double())
    fisher = torch.stack(grads).pow(2).mean(0)
    first = w * reference_grad(model, rows, 2)
    expected = {
        "param_second": (w * fisher * w).abs().sum(1),
        "param_mix": (first - 0.5 * w * fisher * w).abs().sum(1),
        "vectorize": first.sum(1).abs(),
    }
    for importance, want in expected.items():
        got = taylor_saliences(adapter, rows, importance, batch_size=4)["up_proj"][2]
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-12)


def reference_grad(model, rows, layer):
    m = copy.deepcopy(model)
    m(input_ids=rows, labels=rows).loss.backward()
    return m.model.layers[layer].mlp.up_proj.weight.grad.double()


def test_gradients_accumulated_in_batches_equal_one_batch():
    adapter = get_adapter(tiny("gqa"))
    whole = taylor_saliences(adapter, calibration(), "param_first", batch_size=10)
    batched = taylor_saliences(adapter, calibration(), "param_first", batch_size=3)
    for name, tensor in whole.items():
        torch.testing.assert_close(batched[name], tensor, rtol=1e-4, atol=1e-10)


# --- selection ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mha", "gqa"])
def test_a_useless_kv_group_and_channel_are_dropped_first(kind):
    model = tiny(kind)
    adapter = get_adapter(model)
    hd, g = adapter.head_dim, adapter.group_size
    with torch.no_grad():  # KV group 1 of layer 2 and channel 5 of layer 3 contribute nothing
        attn, mlp = adapter.attention(2), adapter.mlp(3)
        attn.q_proj.weight[g * hd : 2 * g * hd] = 0
        attn.k_proj.weight[hd : 2 * hd] = 0
        attn.v_proj.weight[hd : 2 * hd] = 0
        attn.o_proj.weight[:, g * hd : 2 * g * hd] = 0
        mlp.gate_proj.weight[5] = 0
        mlp.up_proj.weight[5] = 0
        mlp.down_proj.weight[:, 5] = 0
    params = {"budget": "native", "gqa_alignment": "consecutive"}
    c = adapter.num_kv_heads * hd
    one_group = first_ratio(lambda r: removed_counts(adapter, r)[0], 1)  # the first r removing a group
    assert (hd - 1) / c < one_group <= hd / c
    plan = plan_for(model, one_group, **params)
    assert plan.notes["removed_kv_groups_per_layer"] == 1
    assert 1 not in kept(plan, 2, "kv_heads", adapter.num_kv_heads)
    plan = plan_for(model, 0.005, **params)  # one channel per layer: 128 - int(128 * 0.995)
    assert plan.notes["removed_channels_per_layer"] == 1 and plan.notes["removed_kv_groups_per_layer"] == 0
    assert kept(plan, 3, "mlp_channels", M) == [c for c in range(M) if c != 5]


@pytest.mark.parametrize("ratio", [0.1, 0.2, 0.3])
def test_study_ratio_is_reached_and_the_physical_model_equals_the_masked_one(ratio):
    model = tiny("gqa")
    adapter = get_adapter(model)
    plan = plan_for(model, ratio)
    attn = range(1, 5)
    assert set(plan.layers) <= set(attn)  # layers 0 and 5 stay whole
    groups, channels = plan.notes["removed_kv_groups_per_layer"], plan.notes["removed_channels_per_layer"]
    assert (groups, channels) == removed_counts(adapter, plan.notes["native_pruning_ratio"])
    for layer in attn:
        assert len(kept(plan, layer, "kv_heads", 2)) == 2 - groups
        assert len(kept(plan, layer, "mlp_channels", M)) == M - channels
    ids = torch.arange(3, 19).view(2, 8)
    masked = mask_plan(model, plan)(ids).logits
    pruned = apply_plan(copy.deepcopy(model), plan)
    torch.testing.assert_close(pruned(ids).logits, masked, rtol=1e-5, atol=1e-5)
    achieved = achieved_ratios(pruned, model)["decoder_ratio"]
    assert achieved == pytest.approx(plan.notes["achieved_decoder_ratio"], abs=1e-12)
    assert abs(achieved - ratio) <= TOLERANCE


def test_same_seed_same_scores_and_plan():
    model = tiny("gqa")
    cfg = config()
    first, second = (METHOD.score(model, calibration(), cfg) for _ in range(2))
    assert all(torch.equal(first.tensors[k], second.tensors[k]) for k in first.tensors)
    plans = [METHOD.select(s, model, 0.2, cfg).to_json() for s in (first, second)]
    assert plans[0] == plans[1]


@pytest.mark.parametrize(
    ("shape", "table"),
    [
        # LLaMA-7B: 32 heads of 128, 11008 channels; Llama-3-8B: 8 KV groups of 4 heads, 14336 channels
        (
            {"num_key_value_heads": 32, "intermediate_size": 11008, "vocab_size": 32000},
            [(6, 2202), (8, 2752), (9, 3303), (16, 5504)],
        ),
        (
            {"num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256},
            [(1, 2868), (2, 3584), (2, 4301), (4, 7168)],
        ),
    ],
)
def test_official_counts_and_the_logged_parameter_totals(shape, table):
    with torch.device("meta"):
        model = LlamaForCausalLM(
            LlamaConfig(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, **shape)
        )
    adapter = get_adapter(model)
    assert [removed_counts(adapter, r) for r in (0.2, 0.25, 0.3, 0.5)] == table
    # README setting: r = 0.25 in layers 4..29. The official logs report 80.4785 % of LLaMA-7B's
    # 6,738,415,616 parameters (5,422,977,024, issue #34) and 82.3458 % of Llama-3-8B's.
    groups, channels = table[1]
    removed = 26 * (groups * kv_group_params(adapter, 4) + channels * mlp_channel_params(adapter, 4))
    kept_share = round(100 * (1 - removed / total_params(model)), 4)
    assert kept_share == (80.4785 if shape["num_key_value_heads"] == 32 else 82.3458)


def test_counts_step_exactly_where_the_floor_changes():
    adapter = get_adapter(tiny("gqa"))  # C = 16 KV channels (2 groups of 8), 128 channels
    for kind, units in ((0, adapter.num_kv_heads), (1, adapter.intermediate_size)):
        for count in range(1, units):
            r = first_ratio(lambda x, k=kind: removed_counts(adapter, x)[k], count)
            below = torch.tensor(r, dtype=torch.float64).nextafter(torch.tensor(0.0, dtype=torch.float64))
            assert removed_counts(adapter, r)[kind] == count
            assert removed_counts(adapter, float(below))[kind] < count
    # a group goes once C - int(C(1-r)) reaches head_dim: r > 7/16, not r >= 1/2 as int(r * H_kv) would say
    assert removed_counts(adapter, 0.44)[0] == 1 and removed_counts(adapter, 0.43)[0] == 0


# --- calibration ---------------------------------------------------------------------------------------


def test_calibration_draws_distinct_long_rows_and_is_seeded(tiny_tokenizer):
    rows = [line for line in SAMPLE_TEXT.replace(". ", ".\n").splitlines() if line.strip()] + ["short"] * 20
    windows = example_windows(tiny_tokenizer, rows, 4, 8, seed=42)
    assert windows.shape == (4, 8) and windows.dtype == torch.long
    assert torch.equal(windows, example_windows(tiny_tokenizer, rows, 4, 8, seed=42))
    assert not torch.equal(windows, example_windows(tiny_tokenizer, rows, 4, 8, seed=0))
    encoded = [tiny_tokenizer(row)["input_ids"] for row in rows]
    for window in windows.tolist():  # each window is a contiguous slice of some row of >= 8 tokens
        assert any(
            len(ids) >= 8 and any(ids[s : s + 8] == window for s in range(len(ids) - 7)) for ids in encoded
        )
    with pytest.raises(PrunebenchError, match=r"has 0 rows .* of at least 8 tokens, fewer than nsamples=1"):
        check_rows(tiny_tokenizer, ["short"] * 5, 1, 8)


# --- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"importance": "taylor"}, "llm-pruner: importance must be one of param_first, param_second"),
        ({"grouping_strategy": "last"}, "llm-pruner: grouping_strategy must be one of sum, mean, max"),
        ({"gqa_alignment": "interleaved"}, "llm-pruner: gqa_alignment must be one of official, consecutive"),
        ({"budget": "params"}, "llm-pruner: budget must be one of decoder, native"),
        ({"batch_size": 0}, "llm-pruner: batch_size must be at least 1"),
        ({"attn_layer_start": -1}, "llm-pruner: attn_layer_start must be >= 0"),
        ({"taylor": "param_first"}, "unknown option 'taylor'"),
    ],
)
def test_bad_options_are_named(params, message):
    with pytest.raises(PrunebenchError, match=message):
        METHOD.config(params)


@pytest.mark.parametrize("family", ["mistral", "qwen2"])
def test_other_families_are_refused(family):
    with pytest.raises(PrunebenchError, match=f"method llm-pruner does not support {family} models"):
        METHOD.check_model(make_tiny_model(family), config())


def test_a_layer_range_outside_the_model_is_refused_before_any_work(
    tmp_path, tiny_tokenizer, capsys, monkeypatch
):
    model = make_tiny_model("llama3", vocab_size=len(tiny_tokenizer))  # 4 layers: default range [4, 2)
    save_pretrained(model, tmp_path / "m", tokenizer=tiny_tokenizer)

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded despite bad input")

    monkeypatch.setattr("prunebench.steps.load_pretrained", refuse)
    for argv in (
        ["score", "--model", str(tmp_path / "m"), "--method", "llm-pruner", "--out", str(tmp_path / "s")],
        [
            "prune",
            "--model",
            str(tmp_path / "m"),
            "--method",
            "llm-pruner",
            "--ratio",
            "0.2",
            "--out",
            str(tmp_path / "p"),
        ],
    ):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert "llm-pruner: attn_layer_start=4, attn_layer_end=-2 give layers [4, 2)" in err[0]
        assert "this model's 4 layers" in err[0]


def test_unreachable_and_impossible_ratios_are_refused_before_scoring():
    model = tiny("gqa")
    adapter = get_adapter(model)
    # One r for both parts: a KV group stays while C(1-r) >= 1 (C = 16 KV channels), so r <= 15/16, where
    # 128 - int(128/16) = 120 channels go. At most: one group and 120 channels in each of the 4 pruned layers.
    channels = M - M // (adapter.num_kv_heads * adapter.head_dim)
    most = (
        4 * (kv_group_params(adapter, 1) + channels * mlp_channel_params(adapter, 1)) / decoder_params(model)
    )
    with pytest.raises(
        PrunebenchError, match=rf"layers 1-4\) reaches decoder ratios {most:.3f} \(r=0\.\d+\) around 0\.8"
    ):
        METHOD.check_ratio(model, 0.8, config())
    with pytest.raises(
        PrunebenchError, match=r"r=0\.995 removes 2 of 2 KV groups and 128 of 128 MLP channels"
    ):
        METHOD.check_ratio(model, 0.995, config(budget="native"))


def test_scores_of_another_kind_or_model_are_refused():
    model = tiny("gqa")
    scores = METHOD.score(model, calibration(), config())
    with pytest.raises(
        PrunebenchError, match="scores use importance 'param_first' but the config asks for 'vectorize'"
    ):
        METHOD.select(scores, model, 0.2, config(importance="vectorize"))
    with pytest.raises(PrunebenchError, match="not by llm-pruner"):
        flap = get_method("flap")
        METHOD.select(flap.score(model, calibration(), flap.config({})), model, 0.2, config())
    with pytest.raises(PrunebenchError, match="llm-pruner scores are for shapes"):
        METHOD.select(scores, tiny("mha"), 0.2, config())
    pruned = apply_plan(copy.deepcopy(model), METHOD.select(scores, model, 0.2, config()))
    with pytest.raises(
        PrunebenchError, match="llm-pruner scores a dense model, but this model is already pruned"
    ):
        METHOD.score(pruned, calibration(), config())
    with pytest.raises(PrunebenchError, match="calibration must be a non-empty"):
        METHOD.score(model, calibration().float(), config())


def test_listed_by_prunebench_methods(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "llm-pruner" in out and "Taylor" in out


# --- the trained demo model -----------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_taylor_choice_beats_its_reverse_at_the_default_study_ratio():
    """On the trained demo model with the default study's shared samples (16 x 128, seed 0), the plan for
    0.3 lands within tolerance and removing the lowest-Taylor units hurts far less than removing the highest."""
    demo = REPO / "resources" / "demo"
    model, tokenizer = load_pretrained(str(demo / "model"))
    samples = calibration_samples(tokenizer, load_text(str(demo / "corpus"), "train"), 16, 128, 0)
    cfg = METHOD.config({})
    scores = METHOD.score(model, samples, cfg)
    plan = METHOD.select(scores, model, 0.3, cfg)
    assert plan.notes["attention_layers"] == [4, 10] and set(plan.layers) == set(range(4, 10))
    reverse = copy.deepcopy(plan)  # the same counts, but the lowest-scoring units stay and the highest go
    heads, channels = unit_scores(scores.tensors, get_adapter(model), "sum", "official")
    for layer, lp in reverse.layers.items():
        lp.kv_heads = sorted(torch.sort(heads[layer], stable=True).indices[: len(lp.kv_heads)].tolist())
        lp.mlp_channels = sorted(
            torch.sort(channels[layer], stable=True).indices[: len(lp.mlp_channels)].tolist()
        )
    assert all(reverse.layers[i].kv_heads != plan.layers[i].kv_heads for i in plan.layers)
    text = load_text(str(demo / "corpus"), "test")
    ppl = {}
    for name, p in (("taylor", plan), ("reverse", reverse)):
        pruned = apply_plan(copy.deepcopy(model), p)
        assert abs(achieved_ratios(pruned, model)["decoder_ratio"] - 0.3) <= TOLERANCE
        ppl[name] = perplexity(pruned, tokenizer, text, 128, max_windows=8, progress=False)["ppl"]
    assert math.isfinite(ppl["taylor"]) and ppl["taylor"] < ppl["reverse"], ppl
