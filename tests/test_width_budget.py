"""The official uniform head/channel count rule (Wanda-sp, magnitude-sp, FLAP UL-UM) and the study ratio."""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from conftest import make_tiny_model

from prunebench.errors import PrunebenchError
from prunebench.methods import get_method
from prunebench.methods.greedy_method import check_reachable
from prunebench.methods.removal_order import Removal, plan_from_order
from prunebench.methods.width_budget import TOLERANCE, native_counts, nearest_keep_counts, uniform_counts
from prunebench.models import get_adapter
from prunebench.models.checkpoint import load_skeleton
from prunebench.models.counting import decoder_params, plan_decoder_ratio
from prunebench.plan import LayerPlan, PruningPlan

REPO = Path(__file__).resolve().parents[1]


def gqa_model(kv_heads: int, group: int = 2, head_dim: int = 8, intermediate: int = 96, layers: int = 2):
    """A random Llama with ``kv_heads`` KV groups of ``group`` query heads (hidden size 8 per query head)."""
    return make_tiny_model(
        "llama",
        hidden_size=8 * kv_heads * group,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=kv_heads * group,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
    )


def smollm2_shaped(layers: int = 2):
    """SmolLM2-135M's layer shape (hidden 576, 9 heads of 64 in 3 KV groups, 1536 channels), fewer layers."""
    return make_tiny_model(
        "llama3",
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=layers,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
    )


@pytest.mark.parametrize("kv_heads", [3, 4, 8, 32])
def test_native_rule_floors_kv_groups_at_every_step(kv_heads):
    adapter = get_adapter(gqa_model(kv_heads, group=1 if kv_heads == 32 else 2, head_dim=2))
    for k in range(1, kv_heads):
        step = k / kv_heads
        assert native_counts(adapter, step)[0] == k
        assert native_counts(adapter, math.nextafter(step, 0.0))[0] == k - 1
        assert native_counts(adapter, math.nextafter(step, 1.0))[0] == k
    assert native_counts(adapter, math.nextafter(1.0, 0.0))[0] == kv_heads - 1  # one group always stays


def test_native_rule_on_hand_numbers():
    adapter = get_adapter(gqa_model(3, intermediate=96))
    assert native_counts(adapter, 0.3) == (0, 28)  # int(0.9), int(28.8)
    assert native_counts(adapter, 0.33) == (0, 31)
    assert native_counts(adapter, 1 / 3) == (1, 32)
    assert native_counts(adapter, 2 / 3) == (2, 64)
    adapter = get_adapter(gqa_model(32, group=1, head_dim=2))
    assert native_counts(adapter, 0.2) == (6, 19)  # int(6.4), int(19.2)


def _plan(adapter, groups: int, channels: int) -> PruningPlan:
    n_kv, m = adapter.num_kv_heads, adapter.intermediate_size
    layer = LayerPlan(kv_heads=list(range(groups, n_kv)), mlp_channels=list(range(channels, m)))
    return PruningPlan("m", "t", {}, 0.0, {i: layer for i in range(adapter.num_layers)})


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: gqa_model(3), id="3-groups"),
        pytest.param(lambda: gqa_model(4, intermediate=128), id="4-groups"),
        pytest.param(lambda: gqa_model(8, head_dim=4, intermediate=160), id="8-groups"),
        pytest.param(lambda: gqa_model(32, group=1, head_dim=2, intermediate=176), id="32-groups"),
    ],
)
def test_decoder_budget_is_the_closest_floored_plan(build):
    adapter = get_adapter(build())
    n_kv, m = adapter.num_kv_heads, adapter.intermediate_size
    # independent brute force over a fine grid of native ratios, with the official float arithmetic
    grid = np.linspace(0, 1, 200_001)[:-1]
    g, c = (grid * n_kv).astype(int), (m * grid).astype(int)
    pairs = sorted(set(zip(g.tolist(), c.tolist(), strict=True)))
    ratios = np.array([plan_decoder_ratio(adapter, _plan(adapter, gi, ci)) for gi, ci in pairs])
    refused = 0
    for target in np.round(np.arange(0, 0.9, 0.01), 2).tolist():
        best = float(np.abs(ratios - target).min())
        try:
            counts = uniform_counts(adapter, target)
        except PrunebenchError as err:
            assert best > TOLERANCE, f"{target} was refused but {best} is reachable"
            assert "reaches decoder ratios" in str(err)
            refused += 1
            continue
        assert (counts.kv_groups_removed, counts.channels_removed) == native_counts(
            adapter, counts.native_ratio
        )
        achieved = plan_decoder_ratio(
            adapter, _plan(adapter, counts.kv_groups_removed, counts.channels_removed)
        )
        assert counts.decoder_ratio == pytest.approx(achieved, abs=1e-12)
        assert abs(achieved - target) <= TOLERANCE
        assert abs(achieved - target) <= best + 1e-12
    assert refused < 90  # most targets are reachable


def test_three_group_model_at_study_ratio_02_keeps_every_kv_group():
    model = smollm2_shaped()
    adapter = get_adapter(model)
    counts = uniform_counts(adapter, 0.2)
    assert counts.kv_groups_removed == 0 and counts.native_ratio < 1 / 3
    assert abs(counts.decoder_ratio - 0.2) <= TOLERANCE
    assert nearest_keep_counts(adapter, 0.2)[0] == 2  # the earlier rule removed one group of three
    method = get_method("magnitude-sp")
    config = method.config({})
    plan = method.select(method.score(model, None, config), model, 0.2, config)
    assert all(lp.kv_heads is None for lp in plan.layers.values())
    assert all(len(lp.mlp_channels) == 1536 - counts.channels_removed for lp in plan.layers.values())
    assert plan.notes["removed_kv_groups_per_layer"] == 0
    assert plan.notes["native_pruning_ratio"] == counts.native_ratio


def test_unreachable_ratio_names_the_reachable_ones_before_scoring():
    model = smollm2_shaped()
    with pytest.raises(PrunebenchError, match=r"wanda-sp: .*reaches decoder ratios 0\.249 .* and 0\.333 "):
        get_method("wanda-sp").check_ratio(model, 0.3, get_method("wanda-sp").config({}))
    native = uniform_counts(get_adapter(model), 0.3, budget="native")  # the native knob is always allowed
    assert (native.kv_groups_removed, native.channels_removed) == (0, 460)
    for bad in (-0.1, 1.0):
        with pytest.raises(PrunebenchError, match=r"\[0, 1\)"):
            uniform_counts(get_adapter(model), bad)
    with pytest.raises(PrunebenchError, match="magnitude-sp: budget must be one of decoder, native"):
        get_method("magnitude-sp").config({"budget": "params"})


@pytest.mark.parametrize("ratio", ["0.1", "0.3", "0.4", "0.5"])
def test_random_structure_rule_follows_the_same_counts(tmp_path, ratio):
    demo = REPO / "resources" / "demo" / "model"
    out, log = tmp_path / "plan.json", tmp_path / "log.txt"
    fake = SimpleNamespace(
        params=SimpleNamespace(model=str(demo), seed=0, ratio=float(ratio)),
        output=[str(out)],
        log=[str(log)],
    )
    runpy.run_path(str(REPO / "workflow/scripts/methods/random_structure.py"), {"snakemake": fake})
    notes = json.loads(out.read_text())["notes"]
    counts = uniform_counts(get_adapter(load_skeleton(str(demo))), float(ratio))
    assert notes["native_pruning_ratio"] == counts.native_ratio
    assert notes["removed_kv_groups_per_layer"] == counts.kv_groups_removed
    assert notes["removed_channels_per_layer"] == counts.channels_removed


def test_default_study_ratios_are_reachable_on_the_demo_model():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    adapter = get_adapter(load_skeleton(str(REPO / config["models"]["demo"]["path"])))
    for ratio in config["ratios"]:
        assert abs(uniform_counts(adapter, ratio).decoder_ratio - ratio) <= TOLERANCE


def test_depth_prefix_reaches_an_exact_decimal_share_without_float_excess():
    # eleven of twenty equal blocks are exactly 0.55, but 0.55 * decoder_params is a hair above 11 blocks
    model = make_tiny_model("llama", num_hidden_layers=20)
    adapter = get_adapter(model)
    block = decoder_params(model) // 20
    assert 0.55 * decoder_params(model) > 11 * block  # the float excess the slack absorbs
    order = [Removal(i, "block") for i in range(20)]
    plan = plan_from_order(adapter, order, 0.55, "t", {}, "m")
    assert plan.notes["native"]["blocks_removed"] == 11
    check_reachable(model, order[:11], 11, 0.55, "t")  # exactly reachable, so not refused
    with pytest.raises(PrunebenchError, match="needs more removals"):
        check_reachable(model, order[:10], 10, 0.55, "t")
