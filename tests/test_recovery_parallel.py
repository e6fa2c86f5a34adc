"""Data-parallel recovery on CPU: two gloo processes (torchrun), replicated (DDP) or sharded (FSDP),
take the same steps as one process with the same global batch, write one recovered model in the
single-process format, and resume after a hard kill of both processes."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from recovery_fixtures import one_thread, write_corpus, write_model
from safetensors.torch import load_file

from prunebench.errors import PrunebenchError
from prunebench.recovery.config import Budget, RecoveryConfig
from prunebench.recovery.parallel import Parallel, torchrun_argv
from prunebench.recovery.run import recover

STEPS = 6
OPTIONS = {
    "batch_size": 4,
    "micro_batch_size": 1,
    "seqlen": 16,
    "lr": 3e-3,
    "val_batches": 1,
    "save_every": 2,
    "lora_dropout": 0.0,  # dropout masks depend on the process count
}
# Gradients are averaged over the processes (all-reduce, or reduce-scatter under FSDP) instead of
# summed in one: the losses and weights agree to float32 rounding, compounded over the steps. Measured
# (torch 2.13, CPU, gloo): largest loss difference 3.4e-8 relative (DDP; FSDP's losses were equal),
# largest weight difference 1.2e-7 absolute (DDP and FSDP, also after a resume); under float16 autocast
# FSDP's losses were equal and the weights saved in float16 at most one rounding step apart.
TOLERANCE = {"rel": 1e-5, "abs": 1e-6}

# Runs recover() in a torchrun process; writes its pid, and rank 0 hangs right after its n-th checkpoint
# write (0: never), so that the test can kill both processes there.
DRIVER = textwrap.dedent(
    """
    import json, os, sys, time, torch
    torch.set_num_threads(1)
    from prunebench.recovery import training
    from prunebench.recovery.config import Budget, RecoveryConfig
    from prunebench.recovery.run import recover

    model, corpus, out, variant, pids = sys.argv[1:6]
    hang_after, steps, options = int(sys.argv[6]), int(sys.argv[7]), json.loads(sys.argv[8])
    with open(os.path.join(pids, os.environ["RANK"]), "w") as fh:
        fh.write(str(os.getpid()))
    original = training.Checkpointer.save
    calls = []

    def save_then_hang(self, state):
        original(self, state)
        calls.append(1)
        if len(calls) == hang_after:
            print("CHECKPOINT", flush=True)
            time.sleep(600)

    training.Checkpointer.save = save_then_hang
    config = RecoveryConfig(**options)
    recover(model, variant, corpus, out, Budget(steps=steps), config=config, device="cpu", show_progress=False)
    """
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel")
    return root, write_model(str(root / "model")), write_corpus(str(root / "corpus"))


@pytest.fixture(scope="module")
def single(setup):
    """One process's recovered models, by variant and dtype (run once each)."""
    root, model, corpus = setup
    runs: dict[tuple[str, str], tuple[str, dict]] = {}

    def run(variant: str, dtype: str = "float32") -> tuple[str, dict]:
        if (variant, dtype) not in runs:
            out = str(root / f"single-{variant}-{dtype}")
            with one_thread():
                summary = recover(
                    model,
                    variant,
                    corpus,
                    out,
                    Budget(steps=STEPS),
                    config=RecoveryConfig(**OPTIONS),
                    dtype=getattr(torch, dtype),
                    show_progress=False,
                )
            runs[variant, dtype] = out, summary
        return runs[variant, dtype]

    return run


def losses(out: str) -> list[float]:
    with open(os.path.join(out, "train_log.csv"), encoding="utf-8") as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh)]


def weights(out: str) -> dict[str, torch.Tensor]:
    files = sorted(name for name in os.listdir(out) if name.endswith(".safetensors"))
    assert files, f"no weights in {out}"
    return {key: value for name in files for key, value in load_file(os.path.join(out, name)).items()}


def summary_of(out: str) -> dict:
    with open(os.path.join(out, "summary.json"), encoding="utf-8") as fh:
        return json.load(fh)


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def assert_same_model(out: str, reference: str) -> None:
    """Same files and tensors (names, shapes, dtypes) as the reference, values within TOLERANCE or, saved
    in a half dtype, one rounding step of it (float32 weights 1e-7 apart can round to neighbours)."""
    assert sorted(os.listdir(out)) == sorted(os.listdir(reference))
    got, want = weights(out), weights(reference)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key].shape == value.shape and got[key].dtype == value.dtype, key
        rtol = max(TOLERANCE["rel"], torch.finfo(value.dtype).eps)
        assert torch.allclose(got[key], value, rtol=rtol, atol=TOLERANCE["abs"]), key


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant, parallel, dtype",
    # float16: autocast with loss scaling, FSDP's ShardedGradScaler on the shards' gradients
    [
        ("cpt", "ddp", "float32"),
        ("lora", "ddp", "float32"),
        ("cpt", "fsdp", "float32"),
        ("cpt", "fsdp", "float16"),
    ],
)
def test_two_gloo_processes_match_one_process(setup, single, variant, parallel, dtype):
    root, model, corpus = setup
    reference_out, reference = single(variant, dtype)
    out = str(root / f"{parallel}-{variant}-{dtype}")
    argv = ["recover", "--model", model, "--variant", variant, "--data", corpus, "--out", out]
    argv += ["--steps", str(STEPS), "--device", "cpu", "--no-progress", "--dtype", dtype]
    argv += [f"--param={key}={value}" for key, value in {**OPTIONS, "parallel": parallel}.items()]
    run = subprocess.run(torchrun_argv(2, argv), env=env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert losses(out) == pytest.approx(losses(reference_out), **TOLERANCE)
    summary = summary_of(out)
    assert summary["processes"] == 2 and reference["processes"] == 1
    assert summary["hyper_parameters"]["parallel"] == parallel
    assert (
        summary["sharded_phases"] == (["cpt"] if parallel == "fsdp" else [])
        and not reference["sharded_phases"]
    )
    assert summary["tokens_trained"] == reference["tokens_trained"] == STEPS * 4 * 16
    assert summary["val_loss_after"] == pytest.approx(reference["val_loss_after"], **TOLERANCE)
    # One checkpoint: the model directory written once by rank 0 in the single-process format (same
    # files, tensor names, shapes and dtypes), no resumable state left behind.
    assert summary["precision"] == reference["precision"]
    assert sorted(os.listdir(root)).count(f"{parallel}-{variant}-{dtype}") == 1
    assert not os.path.exists(os.path.join(out, "resume"))
    assert_same_model(out, reference_out)


@pytest.mark.slow
@pytest.mark.parametrize(
    "parallel, hang_after, resumed_step",
    [("fsdp", 1, 2), ("ddp", 3, 5)],  # inside the (sharded) CPT phase; inside the LoRA phase
)
def test_two_processes_killed_resume_to_the_same_result(setup, single, parallel, hang_after, resumed_step):
    root, model, corpus = setup
    reference_out, reference = single("cpt_lora")
    out, pids, log = str(root / f"killed-{parallel}"), root / f"pids-{parallel}", root / f"{parallel}.log"
    pids.mkdir()
    script = root / "driver.py"
    script.write_text(DRIVER)
    options = json.dumps({**OPTIONS, "parallel": parallel})

    def launch(hang: int) -> subprocess.Popen:
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        args = [model, corpus, out, "cpt_lora", str(pids), str(hang), str(STEPS), options]
        with open(log, "a", encoding="utf-8") as stderr:  # a file: a full pipe would stall the run
            return subprocess.Popen(
                [*torchrun, str(script), *args], stdout=subprocess.PIPE, stderr=stderr, text=True, env=env()
            )

    proc = launch(hang_after)
    try:
        line = proc.stdout.readline()  # blocks until rank 0's n-th checkpoint is on disk
        assert line.strip() == "CHECKPOINT", "the training processes died before their checkpoint"
        assert os.path.exists(os.path.join(out, "resume", "resume.pt"))
        assert not os.path.exists(os.path.join(out, "summary.json"))
    finally:
        for rank in ("0", "1"):  # a hard kill of both training processes
            if (pids / rank).exists():
                os.kill(int((pids / rank).read_text()), signal.SIGKILL)
        proc.kill()
        proc.communicate(timeout=120)
    resumed = launch(0)
    resumed.communicate(timeout=600)
    assert resumed.returncode == 0, log.read_text(encoding="utf-8")[-3000:]
    summary = summary_of(out)
    assert summary["resumed_from_step"] == resumed_step and summary["processes"] == 2
    assert summary["sharded_phases"] == (["cpt"] if parallel == "fsdp" else [])
    assert summary["steps_trained"] == STEPS and summary["tokens_trained"] == reference["tokens_trained"]
    assert losses(out) == pytest.approx(losses(reference_out), **TOLERANCE)
    assert summary["val_loss_after"] == pytest.approx(reference["val_loss_after"], **TOLERANCE)
    assert not os.path.exists(os.path.join(out, "resume"))
    assert_same_model(out, reference_out)


def test_a_batch_that_does_not_split_over_the_processes_is_refused():
    with pytest.raises(
        PrunebenchError, match="batch_size 6 must be a multiple of 4 processes x micro_batch_size 1"
    ):
        Parallel(rank=0, world=4).share(6, 1)
    assert Parallel(rank=1, world=2).share(8, 2) == 4


def test_fsdp_is_refused_for_an_unknown_strategy_or_a_variant_without_full_training(setup, tmp_path):
    _, model, corpus = setup
    with pytest.raises(
        PrunebenchError, match="unknown recovery option parallel 'zero3'; choose one of ddp, fsdp"
    ):
        RecoveryConfig(parallel="zero3")
    with pytest.raises(
        PrunebenchError,
        match=re.escape(
            "recovery option parallel fsdp shards full training (cpt phases); variant lora has none: "
            "use parallel ddp"
        ),
    ):
        recover(
            model,
            "lora",
            corpus,
            str(tmp_path / "out"),
            Budget(steps=2),
            config=RecoveryConfig(parallel="fsdp"),
        )
    assert not (tmp_path / "out").exists()
