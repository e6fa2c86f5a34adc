"""The plan format: roundtrip and validation on load."""

from __future__ import annotations

import json

import pytest
import torch

from prunebench.errors import PrunebenchError
from prunebench.plan import LayerPlan, PruningPlan


def test_roundtrip_with_compensation(tmp_path):
    plan = PruningPlan(
        "m",
        "flap",
        {"metric": "WIFV"},
        0.2,
        {3: LayerPlan([0, 2], [0, 5, 7]), 7: LayerPlan(kv_heads=[])},
        compensation={3: {"o_proj": torch.ones(4)}},
        notes={"extension": "gqa"},
    )
    plan.save(tmp_path / "plan.json")
    doc = json.loads((tmp_path / "plan.json").read_text())
    assert doc["layers"] == {"3": {"kv_heads": [0, 2], "mlp_channels": [0, 5, 7]}, "7": {"kv_heads": []}}
    loaded = PruningPlan.load(tmp_path / "plan.json")
    assert loaded.layers == plan.layers and loaded.params == plan.params and loaded.notes == plan.notes
    assert torch.equal(loaded.compensation[3]["o_proj"], torch.ones(4))
    assert loaded.removed_sublayers() == [(7, "attn")]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("not json", "not valid JSON"),
        ('{"format": "other"}', "'format' must be"),
        (
            '{"format": "prunebench-plan/1", "base_model": "m", "method": "x", "target_ratio": 1.0, "layers": {}}',
            "target_ratio",
        ),
        (
            '{"format": "prunebench-plan/1", "base_model": "m", "method": "x", "target_ratio": 0.2, "layers": {"a": {}}}',
            "not a decoder-layer index",
        ),
        (
            '{"format": "prunebench-plan/1", "base_model": "m", "method": "x", "target_ratio": 0.2, "layers": {"0": {"heads": []}}}',
            "keys among",
        ),
        (
            '{"format": "prunebench-plan/1", "base_model": "m", "method": "x", "target_ratio": 0.2, "layers": {"0": {"kv_heads": [0.5]}}}',
            "list of integers",
        ),
        (
            '{"format": "prunebench-plan/1", "base_model": "m", "method": "x", "target_ratio": 0.2, "layers": {}, "extra": 1}',
            "unknown keys",
        ),
    ],
)
def test_malformed_plans_are_refused(tmp_path, doc, message):
    (tmp_path / "plan.json").write_text(doc)
    with pytest.raises(PrunebenchError, match=message):
        PruningPlan.load(tmp_path / "plan.json")


def test_missing_plan_file(tmp_path):
    with pytest.raises(PrunebenchError, match="not found"):
        PruningPlan.load(tmp_path / "nope.json")
