"""Latency and memory measurement on tiny dense and pruned Llama models (CPU paths)."""

import importlib.util
import json
import re
import warnings
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from prunebench.cli import main
from prunebench.errors import PrunebenchError
from prunebench.evaluation import latency
from prunebench.evaluation.engines import EagerRunner
from prunebench.evaluation.latency import (
    DOES_NOT_FIT,
    LatencyConfig,
    is_out_of_memory,
    kv_bytes_per_token,
    measure_latency,
    weight_bytes,
)
from prunebench.models import apply_plan, save_pretrained
from prunebench.models.counting import total_params
from prunebench.plan import LayerPlan, PruningPlan

LAYERS, HIDDEN, HEADS, KV_HEADS, INTER, CONTEXT = 3, 64, 4, 2, 128, 64
HEAD_DIM = HIDDEN // HEADS
BENCH = Path(__file__).parents[1] / "benchmarks" / "bench_latency.py"
FAST = {"warmup": 1, "min_repeats": 3, "min_seconds": 0.0, "new_tokens": 3}


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=CONTEXT,
    )
    return LlamaForCausalLM(config).eval()


def hand_plan() -> PruningPlan:
    """Layer 0 keeps KV group 1 and half the channels; layer 1 loses attention; layer 2 is removed."""
    return PruningPlan(
        base_model="tiny",
        method="hand",
        params={},
        target_ratio=0.5,
        layers={
            0: LayerPlan(kv_heads=[1], mlp_channels=list(range(0, INTER, 2))),
            1: LayerPlan(kv_heads=[], mlp_channels=None),
            2: LayerPlan(kv_heads=[], mlp_channels=[]),
        },
    )


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads; on a shared machine extra threads only spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dense():
    return tiny_llama()


@pytest.fixture(scope="module")
def pruned():
    return apply_plan(tiny_llama(), hand_plan())


def cache_bytes_per_token(model, batch: int, prompt: int) -> float:
    """Bytes the model's own KV cache holds after a prefill, per token and sequence."""
    ids = torch.randint(0, 128, (batch, prompt))
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).cache
    filled = [layer for layer in cache.layers if layer.keys is not None]  # layers without attention: none
    held = sum(t.numel() * t.element_size() for layer in filled for t in (layer.keys, layer.values))
    return held / (batch * prompt)


def test_kv_bytes_per_token_matches_hand_computation_and_the_real_cache(dense, pruned):
    fp32 = 4
    assert kv_bytes_per_token(dense) == LAYERS * 2 * KV_HEADS * HEAD_DIM * fp32
    # pruned: layer 0 keeps one KV head, layer 1 has no attention, layer 2 is gone
    assert kv_bytes_per_token(pruned) == 1 * 2 * 1 * HEAD_DIM * fp32
    assert cache_bytes_per_token(dense, 2, 5) == kv_bytes_per_token(dense)
    assert cache_bytes_per_token(pruned, 2, 5) == kv_bytes_per_token(pruned)


def test_pruned_model_has_fewer_weight_bytes(dense, pruned):
    assert weight_bytes(dense) == 4 * total_params(dense)
    assert weight_bytes(pruned) == 4 * total_params(pruned)
    assert weight_bytes(pruned) < weight_bytes(dense)


def check_ok_row(row: dict, config: LatencyConfig) -> None:
    assert row["status"] == "ok"
    assert row["repeats"] >= config.min_repeats
    assert len(row["prefill_raw_s"]) == len(row["decode_raw_s_per_token"]) == row["repeats"]
    for phase, unit in (("prefill", "s"), ("decode", "s_per_token")):
        p10, median, p90 = (row[f"{phase}_{q}_{unit}"] for q in ("p10", "median", "p90"))
        assert 0 < p10 <= median <= p90
        assert min(row[f"{phase}_raw_{unit}"]) <= median <= max(row[f"{phase}_raw_{unit}"])
    assert row["prefill_tokens_per_s"] == pytest.approx(
        row["batch_size"] * row["prompt_length"] / row["prefill_median_s"]
    )
    assert row["decode_tokens_per_s"] == pytest.approx(row["batch_size"] / row["decode_median_s_per_token"])
    assert row["peak_rss_bytes"] >= row["rss_before_bytes"] > 0


def test_measure_latency_fields_are_present_and_sane(dense):
    config = LatencyConfig(batch_sizes=(1, 2), prompt_lengths=(4, 8), **FAST)
    result = measure_latency(dense, config)
    json.dumps(result)
    assert [(r["batch_size"], r["prompt_length"]) for r in result["measurements"]] == [
        (1, 4),
        (1, 8),
        (2, 4),
        (2, 8),
    ]
    for row in result["measurements"]:
        check_ok_row(row, config)
    env = result["environment"]
    assert env["timer"] == "perf_counter" and env["threads"] == torch.get_num_threads()
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    described = result["models"]["model"]
    assert described["dtype"] == "float32" and described["attn_implementation"]
    assert described["total_params"] == total_params(dense)
    assert described["flops_per_token"]["8"]["prefill"] > 0
    assert result["protocol"]["greedy"] and result["protocol"]["eos_ignored"]
    assert "speedups" not in result


def test_repeats_stop_once_both_the_minimum_count_and_duration_are_reached(dense):
    by_count = LatencyConfig(prompt_lengths=(4,), warmup=1, min_repeats=4, min_seconds=0.0, new_tokens=2)
    assert measure_latency(dense, by_count)["measurements"][0]["repeats"] == 4

    config = LatencyConfig(prompt_lengths=(4,), warmup=1, min_repeats=2, min_seconds=0.3, new_tokens=2)
    row = measure_latency(dense, config)["measurements"][0]
    per_run = [
        p + d * config.new_tokens
        for p, d in zip(row["prefill_raw_s"], row["decode_raw_s_per_token"], strict=True)
    ]
    assert sum(per_run) >= 0.3 * 0.9  # timed runs fill (almost all of) the wall time of the loop
    if row["repeats"] > config.min_repeats:  # the duration decided: it stopped right after reaching it
        assert sum(per_run[:-1]) < 0.3


def test_interleaved_base_gives_side_by_side_speedups(dense, pruned, monkeypatch):
    order = []
    real_run_once = latency.run_once

    def recording_run_once(runner, *args):
        order.append("base" if runner.model is dense else "model")
        return real_run_once(runner, *args)

    monkeypatch.setattr(latency, "run_once", recording_run_once)
    config = LatencyConfig(batch_sizes=(1,), prompt_lengths=(8,), **FAST)
    result = measure_latency(pruned, config, base=dense)
    timed = order[2 * config.warmup :]  # after each model's warm-up: model, base, model, base ...
    assert timed == ["model", "base"] * (len(timed) // 2) and len(timed) >= 2 * config.min_repeats
    (speedup,) = result["speedups"]
    assert speedup["status"] == "ok"
    assert speedup["ideal_weight_bytes"] == weight_bytes(dense) / weight_bytes(pruned) > 1
    assert speedup["ideal_prefill_flops"] > 1 and speedup["ideal_decode_flops"] > 1
    assert speedup["measured_prefill"] > 0 and speedup["measured_decode"] > 0
    rows = {r["model"]: r for r in result["measurements"]}
    assert speedup["measured_decode"] == pytest.approx(
        rows["base"]["decode_median_s_per_token"] / rows["model"]["decode_median_s_per_token"]
    )


def raise_oom_from_batch(model, min_batch: int, monkeypatch) -> None:
    """The model's forward raises CUDA's out-of-memory error for batches of ``min_batch`` or more."""
    real_forward = model.forward

    def forward(input_ids=None, **kwargs):
        if input_ids.shape[0] >= min_batch:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(input_ids=input_ids, **kwargs)

    monkeypatch.setattr(model, "forward", forward)


def test_out_of_memory_at_one_batch_size_is_recorded_and_the_sweep_goes_on(dense, pruned, monkeypatch):
    raise_oom_from_batch(pruned, 4, monkeypatch)
    config = LatencyConfig(batch_sizes=(1, 4, 2), prompt_lengths=(4,), **FAST)
    result = measure_latency(pruned, config, base=dense)
    rows = {(r["model"], r["batch_size"]): r for r in result["measurements"]}
    assert rows[("model", 4)]["status"] == DOES_NOT_FIT
    assert "OutOfMemoryError" in rows[("model", 4)]["error"]
    check_ok_row(rows[("base", 4)], config)  # the base still fits and is measured
    for batch in (1, 2):
        check_ok_row(rows[("model", batch)], config)
    statuses = {s["batch_size"]: s["status"] for s in result["speedups"]}
    assert statuses == {1: "ok", 4: DOES_NOT_FIT, 2: "ok"}
    json.dumps(result)


def test_out_of_memory_is_told_apart_from_other_errors():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: 8 GB"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_other_runtime_errors_are_not_swallowed(dense, monkeypatch):
    def forward(**kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(dense, "forward", forward)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        measure_latency(dense, LatencyConfig(prompt_lengths=(4,), **FAST))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"batch_sizes": (1, 0)}, "batch size must be a positive integer"),
        ({"prompt_lengths": (-4,)}, "prompt length must be a positive integer"),
        ({"new_tokens": 0}, "new tokens must be a positive integer"),
        ({"batch_sizes": (2, 2)}, "each batch size may be given once"),
        ({"prompt_lengths": (CONTEXT - 2,)}, "exceeds the model's context of 64 tokens"),
        ({"min_repeats": 0}, "min_repeats"),
    ],
)
def test_bad_input_is_rejected_before_running(dense, monkeypatch, change, message):
    monkeypatch.setattr(latency, "run_once", lambda *a: pytest.fail("ran despite bad input"))
    config = LatencyConfig(**({"prompt_lengths": (4,)} | FAST | change))
    with pytest.raises(PrunebenchError, match=message):
        measure_latency(dense, config)


def test_cli_measures_model_and_base_side_by_side(tmp_path, capsys):
    dense_dir, pruned_dir, out = tmp_path / "dense", tmp_path / "pruned", tmp_path / "latency.json"
    save_pretrained(tiny_llama(), dense_dir)
    save_pretrained(apply_plan(tiny_llama(), hand_plan()), pruned_dir)
    argv = ["eval", "latency", "--model", str(pruned_dir), "--base-model", str(dense_dir)]
    sizes = ["--batch-sizes", "1,2", "--prompt-lengths", "4", "--new-tokens", "2", "--warmup", "1"]
    fast = ["--min-repeats", "2", "--min-seconds", "0", "--threads", "1", "--out", str(out)]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # so that the option visibly changes it
    try:
        assert main([*argv, *sizes, *fast]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    assert result["environment"]["threads"] == 1
    assert [(r["model"], r["batch_size"]) for r in result["measurements"]] == [
        ("model", 1),
        ("base", 1),
        ("model", 2),
        ("base", 2),
    ]
    assert result["models"]["model"]["kv_bytes_per_token"] == 1 * 2 * 1 * HEAD_DIM * 4
    assert [s["status"] for s in result["speedups"]] == ["ok", "ok"]
    out = capsys.readouterr().out
    assert "speed-up eager batch 2 prompt 4: prefill" in out
    assert re.search(r"eager model batch 2 prompt 4: prefill [\d.]+ ms \[[\d.]+-[\d.]+\]", out)  # p10-p90


def test_cli_rejects_a_prompt_beyond_the_context(tmp_path, capsys):
    save_pretrained(tiny_llama(), tmp_path / "dense")
    argv = [
        "eval",
        "latency",
        "--model",
        str(tmp_path / "dense"),
        "--prompt-lengths",
        "60",
        "--new-tokens",
        "8",
    ]
    assert main([*argv, "--out", str(tmp_path / "x.json")]) == 2
    assert "exceeds the model's context of 64 tokens" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_benchmark_script_compares_width_and_depth_plans_with_the_dense_model(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_latency", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    config_file, out = tmp_path / "config.json", tmp_path / "bench.json"
    tiny_llama().config.to_json_file(config_file)
    argv = ["--config", str(config_file), "--ratios", "0.3", "--prompt-lengths", "4", "--new-tokens", "2"]
    fast = ["--warmup", "1", "--min-repeats", "2", "--min-seconds", "0", "--device", "cpu", "--out", str(out)]
    assert bench.main(argv + fast) == 0
    result = json.loads(out.read_text())
    variants = {run["variant"]["plan"]: run["variant"] for run in result["runs"]}
    assert set(variants) == {"width", "depth"}
    assert variants["depth"]["decoder_ratio"] == pytest.approx(1 / LAYERS)  # round(0.3 * 3) = 1 block
    assert 0 < variants["width"]["decoder_ratio"] < 0.5
    assert all(s["status"] == "ok" for run in result["runs"] for s in run["speedups"])
    assert "width@0.3" in capsys.readouterr().out and result["command"].startswith(
        "python benchmarks/bench_latency.py --config"
    )


def test_prefill_and_decode_use_the_cache_api_without_deprecation_warnings(dense, pruned):
    """transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name goes in 5.40): neither the
    harness nor the pruned decoder layers may pass the old name, which warns on every forward."""
    ids = torch.randint(0, 128, (2, 5))
    for model in (dense, pruned):
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            latency.run_once(EagerRunner(model), ids, 3, latency._Clock(torch.device("cpu")))
