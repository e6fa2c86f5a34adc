"""SLEB: greedy whole-block removal by summed NLL, barriers, exact fast search, physical result."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model
from greedy_helpers import check_physical, model_with_identity, own_samples
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.methods import get_method
from prunebench.methods.greedy_method import calibration_batches
from prunebench.methods.greedy_reference import masked_score, reference_search
from prunebench.methods.greedy_search import greedy_search
from prunebench.methods.removal_order import Removal
from prunebench.methods.sleb import SummedNll, block_candidates
from prunebench.models import get_adapter


def _score(model, calibration, **params):
    method = get_method("sleb")
    config = method.config(params)
    return method, config, method.score(model, calibration, config)


def test_identity_block_is_removed_first_and_loss_is_summed_nll():
    model = model_with_identity(layers=5, attn=(2,), mlp=(2,))
    calibration = own_samples(model, rows=4, length=16)
    _, _, scores = _score(model, calibration, max_steps=1)
    assert scores.meta["order"] == [[2, "block"]]
    logits = model(calibration).logits
    nll = nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), calibration[:, 1:].reshape(-1)
    )
    assert scores.meta["step_scores"][0] == pytest.approx(nll.item() * calibration.numel(), rel=1e-5)


def test_barriers_and_ties():
    model = model_with_identity(layers=5, attn=(0, 1, 3, 4), mlp=(0, 1, 3, 4))  # blocks 0, 1, 3, 4 identity
    _, _, scores = _score(model, own_samples(model, rows=4, length=16))
    order = [layer for layer, _ in scores.meta["order"]]
    assert order[:2] == [1, 3]  # tie between identity blocks: the earliest; 0 and 4 are barriers
    assert sorted(order) == [1, 2, 3]
    assert block_candidates(6, 2, 1)([Removal(2, "block")]) == [Removal(3, "block"), Removal(4, "block")]


@pytest.mark.parametrize("cache_gb", [8.0, 0.0])
def test_fast_search_returns_the_naive_order(cache_gb):
    model = make_tiny_model("llama3", num_hidden_layers=6, initializer_range=0.3)
    batches = calibration_batches(own_samples(model, rows=4, length=16), 1, "t")
    criterion = SummedNll(batches)
    fast = greedy_search(
        model, batches, criterion, block_candidates(6, 1, 1), 4, "t", cache_gb, progress=False
    )
    naive = reference_search(model, batches, criterion, block_candidates(6, 1, 1), 4)
    assert fast.order == naive.order and fast.scores == naive.scores


def test_select_and_physical_result():
    model = make_tiny_model("llama3", num_hidden_layers=6, initializer_range=0.3)
    calibration = own_samples(model, rows=4, length=16)
    method, config, scores = _score(model, calibration)
    plan = method.select(scores, model, 0.3, config)
    assert plan.notes["native"]["blocks_removed"] == 2  # 2 of 6 equal blocks: the first prefix >= 0.3
    pruned = check_physical(model, plan, calibration)
    assert get_adapter(pruned).num_layers == 4
    batches = calibration_batches(calibration, 1, "t")
    assert masked_score(pruned, batches, SummedNll(batches), frozenset()) == pytest.approx(
        scores.meta["step_scores"][1], rel=1e-5
    )


def test_bad_inputs_fail_before_any_search():
    model = make_tiny_model("llama3", num_hidden_layers=4)
    method = get_method("sleb")
    with pytest.raises(PrunebenchError, match="more removals than allowed"):
        method.check_ratio(model, 0.6, method.config())  # only blocks 1 and 2 may go: 50%
    with pytest.raises(PrunebenchError, match="more removals than allowed"):
        method.check_ratio(model, 0.3, method.config({"max_steps": 1}))
    with pytest.raises(PrunebenchError, match="leave no block"):
        method.check_ratio(model, 0.1, method.config({"early_barrier": 2, "latter_barrier": 2}))
    with pytest.raises(PrunebenchError, match="at least one row"):
        method.score(model, torch.zeros(0, 8, dtype=torch.long), method.config())
