"""The step cost meter: wall time and a peak RSS that belongs to the step."""

import json
import time

import numpy as np
import pytest

from prunebench.evaluation.cost import current_rss_bytes, measure_cost


def test_cost_records_time_and_the_steps_own_peak():
    size = 64 * 2**20
    with measure_cost("allocate") as cost:
        before = current_rss_bytes()
        block = np.ones(size // 8)  # touched pages: resident
        time.sleep(0.05)
        del block
    assert cost["step"] == "allocate"
    assert cost["wall_s"] >= 0.05
    assert cost["peak_rss_bytes"] >= before + size * 0.9
    json.dumps(cost)
    if cost["rss_scope"] == "step":  # the peak was reset: a later small step does not inherit it
        with measure_cost("small") as small:
            pass
        assert small["peak_rss_bytes"] < cost["peak_rss_bytes"] - size // 2


def test_cost_is_filled_when_the_step_raises():
    with pytest.raises(ValueError), measure_cost("fails") as cost:
        raise ValueError("boom")
    assert cost["wall_s"] >= 0 and cost["peak_rss_bytes"] > 0
