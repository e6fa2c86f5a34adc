"""Zero-shot evaluation through lm-eval on a tiny pruned Llama, checked against lm-eval's own CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import lm_eval
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from prunebench.cli import main
from prunebench.errors import PrunebenchError
from prunebench.evaluation.zeroshot import OFFLINE_VARIABLES, ZeroShotConfig, evaluate_zeroshot
from prunebench.models import apply_plan, save_pretrained
from prunebench.plan import LayerPlan, PruningPlan

TASKS = Path(__file__).parent / "data" / "tasks"
TASK = "prunebench_tiny_mc"
BATCH, SEED = 4, 1234


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the task's own text (no download)."""
    items = json.loads((TASKS / "tiny_mc" / "tiny_mc.json").read_text())
    text = [f"Question: {i['question']}\nAnswer: {' '.join(i['choices'])}" for i in items]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(text, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads; on a shared machine extra threads only spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """A GQA Llama pruned by a hand-written plan (irregular shapes), saved with its tokenizer."""
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=0,
        eos_token_id=1,
    )
    plan = PruningPlan(
        base_model="tiny",
        method="hand",
        params={},
        target_ratio=0.4,
        layers={
            0: LayerPlan(kv_heads=[1], mlp_channels=None),
            1: LayerPlan(kv_heads=None, mlp_channels=list(range(0, 128, 3))),
            2: LayerPlan(kv_heads=[], mlp_channels=[]),
        },
    )
    model = apply_plan(LlamaForCausalLM(config).eval(), plan)
    path = tmp_path_factory.mktemp("pruned")
    save_pretrained(model, path, tokenizer=tokenizer, plan=plan)
    return model, tokenizer, path


def run_lm_eval_cli(model_dir: Path, out_dir: Path) -> tuple[dict, list]:
    """lm-eval's own command line on the saved checkpoint; its results JSON and per-sample records."""
    env = (
        os.environ
        | dict.fromkeys(OFFLINE_VARIABLES, "1")
        | {"HF_MODULES_CACHE": str(out_dir / "modules"), "OMP_NUM_THREADS": "1"}
    )
    command = [
        sys.executable, "-m", "lm_eval",
        "--model", "hf",
        "--model_args", f"pretrained={model_dir},trust_remote_code=True",
        "--tasks", TASK,
        "--include_path", str(TASKS),
        "--batch_size", str(BATCH),
        "--device", "cpu",
        "--seed", str(SEED),
        "--log_samples",
        "--output_path", str(out_dir / "lm_eval"),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (results_file,) = (out_dir / "lm_eval").rglob("results_*.json")
    (samples_file,) = (out_dir / "lm_eval").rglob(f"samples_{TASK}_*.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    return json.loads(results_file.read_text()), samples


@pytest.mark.slow  # lm-eval's CLI in a subprocess scans all built-in task YAML files (~12 s of CPU)
def test_in_memory_pruned_model_equals_lm_eval_cli_on_the_saved_checkpoint(pruned, tmp_path, monkeypatch):
    model, tokenizer, path = pruned
    for name in OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)  # restored afterwards
    config = ZeroShotConfig(
        tasks=(TASK,), include_path=str(TASKS), batch_size=BATCH, seed=SEED, offline=True, log_samples=True
    )
    ours = evaluate_zeroshot(model, tokenizer, config)
    assert all(os.environ[name] == "1" for name in OFFLINE_VARIABLES)
    json.dumps(ours)

    cli_results, cli_samples = run_lm_eval_cli(path, tmp_path)
    mine, theirs = ours["results"]["results"][TASK], cli_results["results"][TASK]
    for key in ("acc,none", "acc_norm,none", "acc_stderr,none", "acc_norm_stderr,none"):
        assert mine[key] == pytest.approx(theirs[key], abs=1e-12), key
    # the per-choice log-likelihoods agree too, not only the accuracies
    by_doc = {s["doc_id"]: s for s in cli_samples}
    assert len(ours["results"]["samples"][TASK]) == len(by_doc) == 12
    for sample in ours["results"]["samples"][TASK]:
        cli = by_doc[sample["doc_id"]]
        got = [ll for ll, _ in sample["filtered_resps"]]
        want = [float(ll) for ll, _ in cli["filtered_resps"]]
        assert got == pytest.approx(want, abs=1e-4)


def test_rows_and_protocol(pruned):
    model, tokenizer, _ = pruned
    config = ZeroShotConfig(
        tasks=(TASK,), include_path=str(TASKS), batch_size=2, limit=5, seed=7, offline=True
    )
    result = evaluate_zeroshot(model, tokenizer, config)
    rows = {r["metric"]: r for r in result["rows"]}
    assert set(rows) == {"acc", "acc_norm"}
    for row in rows.values():
        assert row["task"] == TASK and row["n"] == 5 and row["version"] == 1.0
        assert 0 <= row["value"] <= 1 and row["stderr"] > 0
        assert row["value"] == result["results"]["results"][TASK][f"{row['metric']},none"]
    protocol = result["protocol"]
    assert protocol["lm_eval_version"] == lm_eval.__version__ == "0.4.13"
    assert protocol["task_versions"] == {TASK: 1.0}
    assert (protocol["batch_size"], protocol["seed"], protocol["limit"]) == (2, 7, 5)
    assert result["results"]["config"]["batch_size"] == 2
    assert "samples" not in result["results"]


@pytest.fixture
def no_evaluation(monkeypatch):
    """Bad input must be rejected before lm-eval evaluates anything."""
    monkeypatch.setattr(
        lm_eval, "simple_evaluate", lambda *a, **k: pytest.fail("evaluated despite bad input")
    )


@pytest.mark.slow  # close matches come from lm-eval's full task index (~12 s of CPU to build)
def test_unknown_task_lists_close_matches(pruned, no_evaluation):
    model, tokenizer, _ = pruned
    config = ZeroShotConfig(tasks=(TASK, "arc_eazy"), include_path=str(TASKS))
    with pytest.raises(PrunebenchError, match=r"'arc_eazy'.*close matches: .*arc_easy"):
        evaluate_zeroshot(model, tokenizer, config)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"include_path": "/nonexistent/tasks"}, "local task folder /nonexistent/tasks does not exist"),
        ({"batch_size": 0}, "batch size must be a positive integer"),
        ({"batch_size": -2}, "batch size must be a positive integer"),
        ({"tasks": ()}, "no zero-shot task"),
        ({"limit": 0}, "limit must be positive"),
    ],
)
def test_bad_input_is_rejected_before_evaluating(pruned, no_evaluation, change, message):
    model, tokenizer, _ = pruned
    config = ZeroShotConfig(**({"tasks": (TASK,), "include_path": str(TASKS)} | change))
    with pytest.raises(PrunebenchError, match=message):
        evaluate_zeroshot(model, tokenizer, config)


def test_missing_tokenizer_is_rejected(pruned, no_evaluation):
    model, _, _ = pruned
    with pytest.raises(PrunebenchError, match="needs the model's tokenizer"):
        evaluate_zeroshot(model, None, ZeroShotConfig(tasks=(TASK,), include_path=str(TASKS)))


def test_cli_writes_rows_protocol_and_cost(pruned, tmp_path, monkeypatch, capsys):
    _, _, path = pruned
    for name in OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "zeroshot.json"
    argv = ["eval", "zeroshot", "--model", str(path), "--tasks", TASK, "--include-path", str(TASKS)]
    assert main([*argv, "--batch-size", "2", "--limit", "4", "--offline", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {r["metric"] for r in result["rows"]} == {"acc", "acc_norm"}
    assert all(r["n"] == 4 for r in result["rows"])
    assert result["protocol"]["limit"] == 4 and result["protocol"]["batch_size"] == 2
    assert result["cost"]["wall_s"] > 0 and result["cost"]["peak_rss_bytes"] > 0
    assert "acc_norm" in capsys.readouterr().out


def test_cli_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    out = tmp_path / "zeroshot.json"
    argv = ["eval", "zeroshot", "--model", str(tmp_path), "--tasks", TASK, "--out", str(out)]
    assert main([*argv, "--include-path", str(tmp_path / "missing")]) == 2
    assert main([*argv, "--include-path", str(TASKS), "--batch-size", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "does not exist" in err[0] and "batch size" in err[1]
    assert not out.exists()
