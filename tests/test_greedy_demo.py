"""The greedy depth methods on the trained demo model at ratio 0.25 (small calibration, CPU, < ~60 s)."""

from __future__ import annotations

import copy
import importlib.util
import math
import random
import statistics
from pathlib import Path

import pytest
import torch

from prunebench.data import load_text
from prunebench.evaluation.perplexity import perplexity
from prunebench.methods import get_method
from prunebench.models import apply_plan, get_adapter, load_pretrained
from prunebench.models.counting import decoder_params
from prunebench.plan import LayerPlan, PruningPlan

DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (DEMO / "model" / "config.json").is_file(), reason="demo model not built (resources/demo/model)"
    ),
]
RATIO = 0.25
SMALL = {  # tiny calibration (2 rows of 128 tokens) and short searches, so that CPU CI stays fast
    "blockpruner": {"nsamples": 3, "seqlen": 128, "batch_size": 4, "max_steps": 10},
    "finercut": {"nsamples": 2, "seqlen": 128, "max_steps": 10},
    "sleb": {"nsamples": 2, "seqlen": 128, "batch_size": 2, "max_steps": 4},
}


@pytest.fixture(scope="module")
def demo():
    torch.manual_seed(0)
    model, tokenizer = load_pretrained(DEMO / "model")
    return model, tokenizer, load_text(str(DEMO / "corpus"), "test")


def _test_ppl(model, tokenizer, text) -> float:
    """Perplexity on a fixed small prefix of the test split (4 windows of 128 tokens)."""
    return perplexity(model, tokenizer, text, seqlen=128, max_windows=4, progress=False)["ppl"]


def _pruned(name, demo):
    model, tokenizer, _ = demo
    method = get_method(name)
    config = method.config(SMALL[name])
    method.check_ratio(model, RATIO, config)
    calibration = method.calibration(tokenizer, str(DEMO / "corpus"), config)[:2]
    plan = method.select(method.score(model, calibration, config), model, RATIO, config)
    pruned = apply_plan(copy.deepcopy(model), plan)
    assert decoder_params(pruned) <= (1 - RATIO) * decoder_params(model)
    return pruned, plan


def _random_sublayers(model, count: int, seed: int) -> PruningPlan:
    candidates = [(i, part) for i in range(get_adapter(model).num_layers) for part in ("attn", "mlp")]
    layers: dict[int, LayerPlan] = {}
    for layer, part in random.Random(seed).sample(candidates, count):
        lp = layers.setdefault(layer, LayerPlan())
        setattr(lp, "kv_heads" if part == "attn" else "mlp_channels", [])
    return PruningPlan("demo", "random", {}, RATIO, layers)


def test_blockpruner_beats_random_sublayers(demo):
    model, tokenizer, text = demo
    pruned, plan = _pruned("blockpruner", demo)
    steps = plan.notes["native"]["steps"]
    ppl = _test_ppl(pruned, tokenizer, text)
    dense = _test_ppl(model, tokenizer, text)
    random_ppls = [
        _test_ppl(apply_plan(copy.deepcopy(model), _random_sublayers(model, steps, seed)), tokenizer, text)
        for seed in range(5)
    ]
    assert math.isfinite(dense) and ppl < statistics.median(random_ppls), (dense, ppl, random_ppls)


@pytest.mark.parametrize("name", ["finercut", "sleb"])
def test_other_greedy_methods_give_finite_perplexity(demo, name):
    _, tokenizer, text = demo
    pruned, _ = _pruned(name, demo)
    assert math.isfinite(_test_ppl(pruned, tokenizer, text))


def test_benchmark_script_times_fast_and_naive_searches_that_agree(capsys):
    """`benchmarks/bench_greedy.py` on the demo model: it stops with an error if the orders differ."""
    spec = importlib.util.spec_from_file_location(
        "bench_greedy", DEMO.parents[1] / "benchmarks" / "bench_greedy.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    small = ["--bp-nsamples", "3", "--bp-seqlen", "64", "--fc-nsamples", "2", "--fc-seqlen", "64"]
    bench.main(["--model", str(DEMO / "model"), "--text", str(DEMO / "corpus"), "--steps", "2", *small])
    lines = [line for line in capsys.readouterr().out.splitlines() if "naive/fast" in line]
    assert [line.split()[0] for line in lines] == ["blockpruner", "finercut"]
    assert all(len(line.split(" order ")[1].split()) == 2 for line in lines)
