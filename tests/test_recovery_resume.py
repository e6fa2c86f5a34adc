"""Resume after a hard kill: the rerun continues from the checkpoint and ends where an
uninterrupted run ends (deterministic CPU run)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap

import pytest
from recovery_fixtures import one_thread, write_corpus, write_model

from prunebench.errors import PrunebenchError
from prunebench.recovery.config import Budget, RecoveryConfig
from prunebench.recovery.run import recover

OPTIONS = {"batch_size": 4, "seqlen": 16, "lr": 3e-3, "save_every": 2, "val_batches": 2}
STEPS = 8

# Runs recover() and hangs right after its n-th checkpoint write, so that the test can kill it there.
DRIVER = textwrap.dedent(
    """
    import json, sys, time, torch
    torch.set_num_threads(1)
    from prunebench.recovery import training
    from prunebench.recovery.config import Budget, RecoveryConfig
    from prunebench.recovery.run import recover

    model, corpus, out = sys.argv[1:4]
    hang_after, steps, options = int(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6])
    original = training.Checkpointer.save
    calls = []

    def save_then_hang(self, state):
        original(self, state)
        calls.append(1)
        if len(calls) == hang_after:
            print("CHECKPOINT", flush=True)
            time.sleep(600)

    training.Checkpointer.save = save_then_hang
    recover(model, "cpt_lora", corpus, out, Budget(steps=steps), config=RecoveryConfig(**options), show_progress=False)
    """
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    with one_thread():
        model = write_model(str(root / "model"))
        corpus = write_corpus(str(root / "corpus"))
        reference = recover(
            model,
            "cpt_lora",
            corpus,
            str(root / "reference"),
            Budget(steps=STEPS),
            config=RecoveryConfig(**OPTIONS),
            show_progress=False,
        )
    return root, model, corpus, reference


def losses(out: str) -> list[float]:
    with open(os.path.join(out, "train_log.csv"), encoding="utf-8") as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh)]


@pytest.mark.parametrize("hang_after, resumed_step", [(1, 2), (3, 6)])  # inside CPT; inside LoRA
def test_killed_run_resumes_to_the_same_result(setup, hang_after, resumed_step):
    """Also: the checkpoint is refused by a run with another seed (before it resumes)."""
    root, model, corpus, reference = setup
    out = str(root / f"killed_{hang_after}")
    script = root / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen(
        [sys.executable, str(script), model, corpus, out, str(hang_after), str(STEPS), json.dumps(OPTIONS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()  # blocks until the n-th checkpoint is on disk
        assert line.strip() == "CHECKPOINT", "the training subprocess died before its checkpoint"
        assert os.path.exists(os.path.join(out, "resume", "resume.pt"))
        assert not os.path.exists(os.path.join(out, "summary.json"))
    finally:
        proc.kill()
        proc.wait()
    with one_thread(), pytest.raises(PrunebenchError, match="different recovery run"):
        recover(
            model,
            "cpt_lora",
            corpus,
            out,
            Budget(steps=STEPS),
            seed=1,
            config=RecoveryConfig(**OPTIONS),
            show_progress=False,
        )
    with one_thread():
        summary = recover(
            model,
            "cpt_lora",
            corpus,
            out,
            Budget(steps=STEPS),
            config=RecoveryConfig(**OPTIONS),
            show_progress=False,
        )
    assert summary["resumed_from_step"] == resumed_step
    assert summary["steps_trained"] == STEPS and summary["tokens_trained"] == reference["tokens_trained"]
    assert losses(out) == pytest.approx(losses(str(root / "reference")), rel=1e-6, abs=1e-7)
    assert summary["final_train_loss"] == pytest.approx(reference["final_train_loss"], rel=1e-6)
    assert summary["val_loss_after"] == pytest.approx(reference["val_loss_after"], rel=1e-6)
