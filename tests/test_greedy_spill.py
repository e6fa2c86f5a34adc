"""Greedy searches under a device budget: states beyond it wait in CPU memory, the order is the same."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model
from greedy_helpers import own_samples

from prunebench.errors import PrunebenchError
from prunebench.methods import get_method
from prunebench.methods.blockpruner import CalibrationPerplexity, candidate_list
from prunebench.methods.greedy_method import calibration_batches
from prunebench.methods.greedy_search import DecoderRunner, StatePlacement, greedy_search

STATE_BYTES = 8 * 24 * 32 * 4  # one hidden state of the whole calibration set (8 rows x 24 tokens x 32, fp32)


@pytest.mark.parametrize(
    ("device_states", "prefix_layers", "memo_on_device"),
    [(0, 0, False), (5, 2, False), (9, 4, False), (9 + 48, 4, True)],
)
def test_a_device_budget_keeps_the_order(monkeypatch, device_states, prefix_layers, memo_on_device):
    model = make_tiny_model("llama3", num_hidden_layers=4, initializer_range=0.3)
    batches = calibration_batches(own_samples(model), 4, "t")
    runner = DecoderRunner(model, batches)
    budget = max(device_states, 0.5) * STATE_BYTES / 2**30  # 0.5 state: nothing fits, yet a bound
    placement = StatePlacement.plan(runner, budget, 1, 1, 8)
    assert (placement.prefix_layers, placement.memo_on_device) == (prefix_layers, memo_on_device)
    spilled = []
    keep = StatePlacement.keep
    monkeypatch.setattr(
        StatePlacement, "keep", lambda self, h, on: spilled.append(not on) or keep(self, h, on)
    )
    criterion = CalibrationPerplexity(batches, 0)
    bounded = greedy_search(model, batches, criterion, candidate_list(4, "mix"), 8, "t", 8.0, budget, False)
    monkeypatch.setattr(StatePlacement, "keep", keep)
    free = greedy_search(model, batches, criterion, candidate_list(4, "mix"), 8, "t", 8.0, 0.0, False)
    assert bounded.order == free.order and bounded.scores == free.scores
    assert any(spilled) == (not memo_on_device or prefix_layers < 4)


def test_a_spilled_state_is_a_cpu_copy():
    placement = StatePlacement(torch.device("cpu"), prefix_layers=1, memo_on_device=False)
    hidden = torch.randn(2, 3, 4)
    assert placement.prefix(0, hidden) is hidden
    copy = placement.prefix(1, hidden)
    assert copy is not hidden and torch.equal(copy, hidden) and copy.device.type == "cpu"
    assert placement.memo(hidden) is not hidden


@pytest.mark.parametrize("method", ["blockpruner", "finercut", "sleb"])
def test_a_negative_device_cache_is_refused(method):
    with pytest.raises(PrunebenchError, match=r"device_cache_gb must be >= 0 \(0: no bound\), got -1"):
        get_method(method).config({"device_cache_gb": -1})
