"""``round_to``: aligned kept widths for FLAP, Wanda-sp and magnitude-sp (a labelled deviation, off by default)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model

from prunebench.errors import PrunebenchError
from prunebench.methods import get_method
from prunebench.methods.width_budget import TOLERANCE, align_count, kv_unit, uniform_counts
from prunebench.models import get_adapter
from prunebench.models.counting import plan_decoder_ratio

INTER = 200  # not a multiple of 8, so the dense width stays unaligned and the official counts rarely align
ROUND_TO = 8
# (method, extra params) of every method that takes round_to
METHODS = [
    ("flap", {"nsamples": 8, "seqlen": 16, "structure": "AL-AM"}),
    ("flap", {"nsamples": 8, "seqlen": 16, "structure": "UL-UM"}),
    ("wanda-sp", {"nsamples": 8, "seqlen": 16}),
    ("magnitude-sp", {}),
]


@pytest.fixture(scope="module")
def model():
    return make_tiny_model("llama3", intermediate_size=INTER, num_hidden_layers=4)


@pytest.fixture(scope="module")
def calibration():
    return torch.randint(0, 96, (8, 16), generator=torch.Generator().manual_seed(0))


def kept_widths(plan, adapter) -> list[tuple[int, int]]:
    """(kept KV groups, kept channels) per layer of ``plan``."""
    out = []
    for i in range(adapter.num_layers):
        layer = plan.layers.get(i)
        kv = adapter.num_kv_heads if layer is None or layer.kv_heads is None else len(layer.kv_heads)
        ch = INTER if layer is None or layer.mlp_channels is None else len(layer.mlp_channels)
        out.append((kv, ch))
    return out


def prune(model, calibration, name: str, params: dict, ratio: float):
    method = get_method(name)
    config = method.Config.from_params(params)
    scores = method.score(model, None if not method.uses_calibration else calibration, config)
    return method.select(scores, model, ratio, config)


@pytest.mark.parametrize(
    ("name", "params"), METHODS, ids=["flap-al-am", "flap-ul-um", "wanda-sp", "magnitude-sp"]
)
@pytest.mark.parametrize("ratio", [0.3, 0.5])
def test_round_to_keeps_multiples_and_reaches_the_target(model, calibration, name, params, ratio):
    """Every kept channel count is a multiple of 8 (or 0, or the whole layer); decoder ratio within 0.02."""
    adapter = get_adapter(model)
    plan = prune(model, calibration, name, params | {"round_to": ROUND_TO}, ratio)
    for kv, channels in kept_widths(plan, adapter):
        assert channels % ROUND_TO == 0 or channels == INTER
        assert (kv * adapter.head_dim) % ROUND_TO == 0
    assert abs(plan_decoder_ratio(adapter, plan) - ratio) <= TOLERANCE
    assert any(f"round_to={ROUND_TO}" in line for line in plan.notes["deviations"])


@pytest.mark.parametrize(
    ("name", "params"), METHODS, ids=["flap-al-am", "flap-ul-um", "wanda-sp", "magnitude-sp"]
)
def test_default_stays_faithful_and_unaligned(model, calibration, name, params):
    """round_to defaults to 1: the official counts, which here are not multiples of 8, and no deviation note."""
    adapter = get_adapter(model)
    plan = prune(model, calibration, name, params, 0.3)
    assert plan.params["round_to"] == 1
    assert not any("round_to" in line for line in plan.notes.get("deviations", []))
    assert any(ch % ROUND_TO for _, ch in kept_widths(plan, adapter))


def test_align_count_rounds_to_the_nearest_multiple_within_bounds():
    assert [align_count(c, 8, 200) for c in (0, 1, 4, 11, 12, 13, 196, 199, 200)] == [
        0, 8, 8, 8, 16, 16, 200, 200, 200
    ]  # fmt: skip
    assert align_count(37, 1, 200) == 37


def test_kv_groups_align_only_where_head_dim_is_not_a_multiple(model):
    adapter = get_adapter(model)  # head_dim 8, two KV groups
    assert kv_unit(adapter, 8) == 1
    assert kv_unit(adapter, 16) == 2
    # with 16, keeping one of two groups would leave 8-wide k/v projections: attention stays whole
    counts = uniform_counts(adapter, 0.5, "native", "flap", round_to=16)
    assert counts.kv_groups_removed == 0 and (INTER - counts.channels_removed) % 16 == 0


@pytest.mark.parametrize("bad", [0, -8, 2.5, True])
def test_bad_round_to_is_refused_in_one_line(bad):
    with pytest.raises(PrunebenchError, match=r"^flap: round_to must be a positive integer \(1 = official\)"):
        get_method("flap").Config.from_params({"round_to": bad})


def test_a_ratio_the_aligned_grid_cannot_reach_names_the_neighbours_and_the_remedy(model):
    """128-multiples of 200 channels leave only 128 or 200 kept: 0.3 is out of reach."""
    with pytest.raises(PrunebenchError, match=r"^magnitude-sp: .* rounded to multiples of 128 reaches decoder ratios .*"
                       r"choose a reachable ratio, a smaller round_to or budget=native$"):  # fmt: skip
        uniform_counts(get_adapter(model), 0.15, "decoder", "magnitude-sp", round_to=128)
