"""Data-parallel recovery on CPU: two gloo processes (torchrun) take the same steps as one process
with the same global batch, and write one recovered model."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
from recovery_fixtures import one_thread, write_corpus, write_model

from prunebench.errors import PrunebenchError
from prunebench.recovery.config import Budget, RecoveryConfig
from prunebench.recovery.parallel import Parallel, torchrun_argv
from prunebench.recovery.run import recover

STEPS = 6
OPTIONS = {"batch_size": 4, "micro_batch_size": 1, "seqlen": 16, "lr": 3e-3, "val_batches": 1}
# Gradients are averaged over the processes instead of summed in one: the losses agree to float32
# rounding, compounded over the steps (measured: about 1e-7 relative).
TOLERANCE = {"rel": 1e-5, "abs": 1e-6}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel")
    return root, write_model(str(root / "model")), write_corpus(str(root / "corpus"))


def losses(out: str) -> list[float]:
    with open(os.path.join(out, "train_log.csv"), encoding="utf-8") as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh)]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["cpt", "lora"])
def test_two_gloo_processes_match_one_process(setup, variant):
    root, model, corpus = setup
    options = {**OPTIONS, "lora_dropout": 0.0}  # dropout masks depend on the process count
    single = str(root / f"single-{variant}")
    with one_thread():
        reference = recover(
            model,
            variant,
            corpus,
            single,
            Budget(steps=STEPS),
            config=RecoveryConfig(**options),
            show_progress=False,
        )
    out = str(root / f"ddp-{variant}")
    argv = ["recover", "--model", model, "--variant", variant, "--data", corpus, "--out", out]
    argv += ["--steps", str(STEPS), "--device", "cpu", "--no-progress"]
    argv += [f"--param={key}={value}" for key, value in options.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    run = subprocess.run(torchrun_argv(2, argv), env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert losses(out) == pytest.approx(losses(single), **TOLERANCE)
    with open(os.path.join(out, "summary.json"), encoding="utf-8") as fh:
        summary = json.load(fh)
    assert summary["processes"] == 2 and reference["processes"] == 1
    assert summary["tokens_trained"] == reference["tokens_trained"] == STEPS * 4 * 16
    assert summary["val_loss_after"] == pytest.approx(reference["val_loss_after"], **TOLERANCE)
    # One checkpoint: the model directory written once by rank 0, no resumable state left behind.
    assert sorted(os.listdir(root)).count(f"ddp-{variant}") == 1
    assert not os.path.exists(os.path.join(out, "resume"))
    assert os.path.exists(os.path.join(out, "model.safetensors")) or any(
        name.endswith(".safetensors") for name in os.listdir(out)
    )


def test_a_batch_that_does_not_split_over_the_processes_is_refused():
    with pytest.raises(
        PrunebenchError, match="batch_size 6 must be a multiple of 4 processes x micro_batch_size 1"
    ):
        Parallel(rank=0, world=4).share(6, 1)
    assert Parallel(rank=1, world=2).share(8, 2) == 4
