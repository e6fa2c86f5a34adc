"""The three one-shot block rankings on the shipped demo model at ratio 0.25, with small calibration."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from prunebench.data import calibration_samples, load_text
from prunebench.evaluation.perplexity import perplexity
from prunebench.methods import get_method
from prunebench.models import apply_plan, get_adapter, load_pretrained
from prunebench.models.counting import achieved_ratios

DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"


@pytest.fixture(scope="module")
def demo():
    model, tokenizer = load_pretrained(DEMO / "model")
    train_prefix = load_text(str(DEMO / "corpus"), "train")[:100_000]
    calibration = calibration_samples(tokenizer, train_prefix, 4, 64, seed=0)
    test_text = load_text(str(DEMO / "corpus"), "test")[:20_000]  # a fixed prefix: 8 windows of 128
    dense = perplexity(model, tokenizer, test_text, seqlen=128, max_windows=8, progress=False)["ppl"]
    return model, tokenizer, calibration, test_text, dense


@pytest.mark.parametrize("name", ["shortened-ppl", "shortened-taylor", "shortgpt"])
def test_ratio_quarter_on_demo_model(demo, name):
    dense_model, tokenizer, calibration, test_text, dense_ppl = demo
    model, _ = load_pretrained(DEMO / "model")
    method = get_method(name)
    config = method.config({})
    method.check_ratio(model, 0.25, config)
    plan = method.select(method.score(model, calibration, config), model, 0.25, config)
    if name.startswith("shortened"):
        assert not set(plan.layers) & {0, 1, 2, 3, 10, 11}  # the "+" heuristic, on by default
    apply_plan(model, plan)
    layers = get_adapter(dense_model).num_layers
    assert get_adapter(model).num_layers == layers - math.ceil(0.25 * layers)
    assert achieved_ratios(model, dense_model)["decoder_ratio"] >= 0.25
    ppl = perplexity(model, tokenizer, test_text, seqlen=128, max_windows=8, progress=False)["ppl"]
    assert math.isfinite(ppl) and ppl > 1 and math.isfinite(dense_ppl)
