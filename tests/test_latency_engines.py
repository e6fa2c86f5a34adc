"""The compiled latency engine against the eager one, the roofline figures and the per-engine JSON.

Compilation with inductor takes tens of seconds on a shared CPU even for these tiny models, so the tests
that compile are marked ``slow`` and share one pair of models per module (the second compile of the
same shapes hits inductor's cache).
"""

import json
from copy import deepcopy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from prunebench.cli import main
from prunebench.commands.eval_latency import warnings as latency_warnings
from prunebench.errors import PrunebenchError
from prunebench.evaluation import engines, latency
from prunebench.evaluation.engines import COMPILE_FAILED, CompiledRunner, EagerRunner, check_engines
from prunebench.evaluation.latency import LatencyConfig, kv_bytes_per_token, measure_latency
from prunebench.evaluation.roofline import (
    Work,
    decode_work,
    prefill_work,
    roofline_seconds,
    weights_read_bytes,
)
from prunebench.models import apply_plan, load_pretrained, save_pretrained
from prunebench.plan import LayerPlan, PruningPlan

LAYERS, HIDDEN, HEADS, KV_HEADS, INTER, VOCAB = 4, 64, 4, 2, 96, 128
HEAD_DIM = HIDDEN // HEADS
FAST = {"warmup": 1, "min_repeats": 2, "min_seconds": 0.0, "new_tokens": 4}
# float32 on CPU: inductor fuses and reorders reductions, so logits differ from eager by rounding only
LOGIT_ATOL = 1e-4


def tiny_config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=64,
    )


def irregular_plan() -> PruningPlan:
    """Irregular widths (one KV group, 37 channels; 61 channels), a layer without attention, one without MLP."""
    return PruningPlan(
        base_model="tiny",
        method="hand",
        params={},
        target_ratio=0.4,
        layers={
            0: LayerPlan(kv_heads=[1], mlp_channels=list(range(0, 74, 2))),
            1: LayerPlan(kv_heads=[], mlp_channels=list(range(61))),
            2: LayerPlan(kv_heads=None, mlp_channels=[]),
        },
    )


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(dense, pruned), the pruned one saved and reloaded through the shipped modelling code."""
    torch.manual_seed(0)
    dense = LlamaForCausalLM(tiny_config()).eval()
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("pruned")
    save_pretrained(apply_plan(LlamaForCausalLM(tiny_config()), irregular_plan()), folder)
    pruned, _ = load_pretrained(folder)
    assert type(pruned).__name__.startswith("Prunebench")
    return dense, pruned.eval()


def greedy(runner, input_ids: torch.Tensor, new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens chosen and last-position logits of every step of one run."""
    logits: list = []
    runner.generate(input_ids, new_tokens, lambda: 0.0, keep=logits)
    steps = torch.stack(logits, dim=1)  # [batch, new_tokens + 1, vocab]
    return steps.argmax(dim=-1), steps


@pytest.mark.slow
def test_compiled_engine_gives_the_eager_tokens_and_logits(models):
    """Irregular widths, removed attention and removed MLP: same greedy tokens, logits within 1e-4."""
    dense, pruned = models
    ids = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(1))
    new_tokens = 6
    for model in (pruned, dense):
        eager_tokens, eager_logits = greedy(EagerRunner(model), ids, new_tokens)
        compiled = CompiledRunner(model)
        assert compiled.prepare(7 + new_tokens, ids, new_tokens) > 0
        for _ in range(2):  # and again with the cache reset in between
            tokens, logits = greedy(compiled, ids, new_tokens)
            assert torch.equal(tokens, eager_tokens)
            torch.testing.assert_close(logits, eager_logits, atol=LOGIT_ATOL, rtol=0)


@pytest.mark.slow
def test_a_copy_pruned_after_compiling_the_original_runs_its_own_weights(models):
    """The benchmarks deep-copy the dense model after it was compiled; the copy must not reuse its graph."""
    dense, _ = models
    ids = torch.randint(0, VOCAB, (1, 5), generator=torch.Generator().manual_seed(2))
    CompiledRunner(dense).prepare(8, ids, 3)
    copy = apply_plan(deepcopy(dense), irregular_plan())
    compiled = CompiledRunner(copy)
    compiled.prepare(8, ids, 3)
    tokens, logits = greedy(compiled, ids, 3)
    eager_tokens, eager_logits = greedy(EagerRunner(copy), ids, 3)
    assert torch.equal(tokens, eager_tokens)
    torch.testing.assert_close(logits, eager_logits, atol=LOGIT_ATOL, rtol=0)


@pytest.mark.slow
def test_latency_json_carries_engine_compile_time_and_per_cell_figures(models):
    dense, pruned = models
    config = LatencyConfig(batch_sizes=(1,), prompt_lengths=(4, 8), engines=("eager", "compiled"), **FAST)
    result = measure_latency(pruned, config, base=dense)
    json.dumps(result)
    assert set(result["engines"]) == {"eager", "compiled"}
    assert result["engines"]["compiled"]["cache"] == "static"
    assert result["peaks"]["bytes_per_s"] > 0 and result["peaks"]["flops_per_s"] > 0
    rows = {(r["engine"], r["model"], r["prompt_length"]): r for r in result["measurements"]}
    assert len(rows) == 2 * 2 * 2
    for (engine, _, _), row in rows.items():
        assert row["status"] == "ok"
        assert (row["compile_s"] is None) == (engine == "eager")
        assert row["warmup_s"] > 0
        assert row["graphs_compiled_while_timed"] == 0  # compilation stayed out of the timings
        assert row["decode_fraction_of_peak_bandwidth"] > 0 and row["prefill_fraction_of_peak_flops"] > 0
    # compilation happens once per model and batch size: the second prompt length reuses the graph
    assert rows[("compiled", "model", 4)]["compile_s"] > 0
    speedups = {(s["engine"], s["prompt_length"]): s for s in result["speedups"]}
    assert set(speedups) == {(e, p) for e in ("eager", "compiled") for p in (4, 8)}
    for s in speedups.values():
        assert s["status"] == "ok" and s["measured_decode"] > 0 and s["ideal_decode"] > 1
        assert s["measured_decode_paired_p10"] <= s["measured_decode_paired_p90"]
    assert {(e["model"], e["prompt_length"]) for e in result["engine_speedups"]} == {
        (m, p) for m in ("model", "base") for p in (4, 8)
    }


def test_a_failed_compilation_is_recorded_and_the_eager_engine_carries_on(models, monkeypatch):
    dense, pruned = models

    def fail(self, *args):
        raise torch._dynamo.exc.Unsupported("data-dependent control flow")

    monkeypatch.setattr(engines.CompiledRunner, "prepare", fail)
    config = LatencyConfig(batch_sizes=(1,), prompt_lengths=(4,), engines=("eager", "compiled"), **FAST)
    result = measure_latency(pruned, config, base=dense)
    rows = {(r["engine"], r["model"]): r for r in result["measurements"]}
    assert rows[("compiled", "model")]["status"] == COMPILE_FAILED
    assert "Unsupported: data-dependent control flow" in rows[("compiled", "model")]["error"]
    assert rows[("eager", "model")]["status"] == rows[("eager", "base")]["status"] == "ok"
    statuses = {s["engine"]: s["status"] for s in result["speedups"]}
    assert statuses == {"eager": "ok", "compiled": COMPILE_FAILED}
    json.dumps(result)


def test_errors_of_the_eager_engine_are_not_taken_for_compile_failures(models, monkeypatch):
    dense, _ = models

    def fail(*args, **kwargs):
        raise torch._dynamo.exc.Unsupported("not a compile")

    monkeypatch.setattr(engines.EagerRunner, "generate", fail)
    with pytest.raises(torch._dynamo.exc.Unsupported):
        measure_latency(dense, LatencyConfig(prompt_lengths=(4,), **FAST))


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ((), "no latency engine given"),
        (("eager", "jit"), "unknown latency engine 'jit'; choose from eager, compiled"),
        (("eager", "eager"), "each latency engine may be given once"),
    ],
)
def test_bad_engines_are_refused(names, message):
    with pytest.raises(PrunebenchError, match=message):
        check_engines(names)


def test_cli_refuses_an_unknown_engine_before_loading(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(latency, "measure_latency", lambda *a, **k: pytest.fail("measured"))
    code = main(["eval", "latency", "--model", str(tmp_path / "absent"), "--engine", "tensorrt",
                 "--out", str(tmp_path / "lat.json")])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["prunebench: error: unknown latency engine 'tensorrt'; choose from eager, compiled"]


def test_roofline_work_matches_a_hand_count(models):
    dense, pruned = models
    kv = kv_bytes_per_token(dense)
    linear = LAYERS * (2 * HIDDEN * HIDDEN + 2 * HIDDEN * KV_HEADS * HEAD_DIM + 3 * HIDDEN * INTER)
    head = VOCAB * HIDDEN
    attention = LAYERS * 4 * HEAD_DIM * HEADS
    batch, prompt = 2, 8
    work = prefill_work(dense, batch, prompt, kv)
    assert work.flops == batch * (2 * prompt * linear + 2 * head + attention * prompt * (prompt + 1) / 2)
    step = decode_work(dense, batch, 10.0, kv)
    assert step.flops == batch * (2 * linear + 2 * head + attention * 10.0)
    # untied embeddings: only the batch's rows of the input table are read
    params = sum(p.numel() for p in dense.parameters())
    assert weights_read_bytes(dense, batch) == 4 * (params - VOCAB * HIDDEN + batch * HIDDEN)
    assert step.bytes == weights_read_bytes(dense, batch) + batch * 10.0 * kv
    # pruned: layer 1 has no attention, so only three layers count attention FLOPs and KV bytes
    assert kv_bytes_per_token(pruned) == 4 * 2 * HEAD_DIM * (1 + 0 + KV_HEADS + KV_HEADS)


def test_roofline_picks_the_larger_of_compute_and_memory_time():
    peaks = {"flops_per_s": 1e12, "bytes_per_s": 1e11}
    assert roofline_seconds(Work(2e12, 1e9), peaks) == (2.0, "compute")
    assert roofline_seconds(Work(1e9, 5e11), peaks) == (5.0, "memory")


def test_ideal_speedups_per_cell_follow_the_bound(models):
    """Batch-1 decode of these models is memory-bound: its ideal is the ratio of bytes read per step."""
    dense, pruned = models
    config = LatencyConfig(batch_sizes=(1,), prompt_lengths=(4,), **FAST)
    result = measure_latency(pruned, config, base=dense)
    (s,) = result["speedups"]
    assert s["engine"] == "eager"
    rows = {r["model"]: r for r in result["measurements"]}
    assert s["decode_bound"] == rows["base"]["decode_bound"]
    if s["decode_bound"] == "memory":
        assert s["ideal_decode"] == pytest.approx(s["ideal_decode_bytes"])
    for row in rows.values():
        seconds, bound = roofline_seconds(
            Work(row["decode_flops_per_step"], row["decode_bytes_per_step"]), result["peaks"]
        )
        assert (seconds, bound) == (row["decode_roofline_s_per_token"], row["decode_bound"])
        assert row["decode_fraction_of_peak_bandwidth"] == pytest.approx(
            row["decode_bytes_per_step"] / row["decode_median_s_per_token"] / result["peaks"]["bytes_per_s"]
        )


def test_cli_warns_only_where_the_measured_gain_is_under_half_the_ideal_gain():
    def cell(measured_decode: float, ideal_decode: float) -> dict:
        return {"engine": "eager", "batch_size": 1, "prompt_length": 8, "status": "ok",
                "measured_prefill": 1.9, "ideal_prefill": 2.0,
                "measured_decode": measured_decode, "ideal_decode": ideal_decode}  # fmt: skip

    result = {"speedups": [cell(1.05, 1.96), cell(1.6, 1.96), cell(0.9, 0.95), {"status": "does not fit"}]}
    (line,) = latency_warnings(result)
    assert line.startswith(
        "eager batch 1 prompt 8: measured decode speed-up 1.05x gains less than 50% of the ideal 1.96x"
    )
