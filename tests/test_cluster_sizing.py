"""Slurm jobs sized by the model (memory and time from parameters and dtype) and refused before
submission when no node of their partition can run them."""

from __future__ import annotations

import pytest

from prunebench.errors import PrunebenchError
from prunebench.study import cluster
from prunebench.study.cluster import (
    Node,
    Request,
    check_cluster,
    parse_nodes,
    parse_partitions,
    unschedulable,
)
from prunebench.study.sizing import (
    memory_mb,
    parameter_count,
    prune_runtime_min,
    recovery_runtime_min,
    recovery_tokens,
    runtime_min,
)

TINY = {"path": "tests/data/tiny-model", "dtype": "float32"}


def test_a_tiny_model_asks_little_and_a_7b_model_what_it_needs():
    tiny = parameter_count(TINY)
    assert 0 < tiny < 10_000_000
    assert memory_mb("recover", tiny, "float32", full_training=True) == 4000
    assert memory_mb("eval_zeroshot", tiny, "float32") == 4000
    assert runtime_min("eval_zeroshot", tiny) == 16
    seven = 6_738_415_616  # Llama-2-7B
    assert memory_mb("eval_zeroshot", seven, "float16") == 30_000  # 3,000 + 2 x 6.74e9 x 2 B
    assert memory_mb("prune", seven, "float16") == 44_000  # 3 copies
    assert memory_mb("recover", seven, "float16", full_training=True) == 84_000  # 3 float32 copies
    assert memory_mb("recover", seven, "float16") == 30_000  # LoRA: the base in float16
    assert runtime_min("eval_ppl", seven, units=6) == 15 + 122  # 3 min per 1e9 parameters per pair
    # CPT on 200M tokens: 6 P T FLOPs at 100 TFLOP/s with 1.5 margin; two GPUs halve it.
    one = recovery_runtime_min(seven, 200_000_000, full_training=True)
    assert one == 15 + int(-(-1.5 * 6 * seven * 2e8 / 1e14 // 60))
    assert recovery_runtime_min(seven, 200_000_000, True, gpus=2) == 15 + (one - 15 + 1) // 2
    assert recovery_tokens({"steps": 10, "batch_size": 4, "seqlen": 8}) == 320
    assert recovery_tokens({"tokens": 1000, "steps": 50, "batch_size": 4, "seqlen": 8}) == 1000


def test_a_method_that_trains_per_ratio_gets_its_training_time_in_the_prune_job():
    from prunebench.methods import get_method

    seven = 6_738_415_616
    policy = get_method("policy-gradient")
    tokens = policy.ratio_step_tokens(policy.config({}))
    assert tokens == 15_000 * 8 * 2 * 128  # official steps x batch x K sampled masks x block length
    assert prune_runtime_min(seven, 0) == runtime_min("prune", seven)
    training = 1.5 * 2 * seven * tokens / 1e14 / 60  # forward FLOPs at 100 TFLOP/s with the margin
    assert prune_runtime_min(seven, tokens) == -(-(15 + 5 * seven / 1e9 + training) // 1)
    assert get_method("flap").ratio_step_tokens(get_method("flap").config({})) == 0


def test_an_unreadable_hub_model_is_sized_as_assumed_with_a_warning(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert parameter_count({"path": "nobody/not-cached-model", "dtype": "float16"}) == 8_000_000_000
    assert (
        "cannot read the config of nobody/not-cached-model here; its jobs are sized for 8B"
        in capsys.readouterr().err
    )


NODES = """NodeName=n1 Arch=x86_64 CoresPerSocket=1 CPUAlloc=0 CPUTot=2 CPULoad=0.1 Gres=gpu:2 RealMemory=21700 Partitions=debug,gpu State=IDLE
NodeName=n2 CPUTot=64 Gres=gpu:a100:4(S:0-1) RealMemory=512000 Partitions=gpu State=IDLE
"""
PARTITIONS = """PartitionName=debug Default=YES MaxTime=01:00:00 Nodes=n1
PartitionName=gpu Default=NO MaxTime=2-00:00:00 Nodes=n1,n2
"""


def test_scontrol_nodes_and_partitions_are_read():
    nodes = parse_nodes(NODES)
    assert nodes == [Node("n1", 2, 21700, 2, ("debug", "gpu")), Node("n2", 64, 512000, 4, ("gpu",))]
    assert parse_partitions(PARTITIONS) == ({"debug": 60, "gpu": 2880}, "debug")


def test_jobs_that_no_node_can_run_are_named_once_per_rule():
    nodes = parse_nodes(NODES)
    limits, default = parse_partitions(PARTITIONS)
    requests = [
        Request("recover (model=a)", 4, 48000, 1, 30),  # default partition debug: n1 only, 2 CPUs
        Request("recover (model=b)", 4, 48000, 1, 30),
        Request("score (model=a)", 4, 48000, 1, 720, "gpu"),  # fits n2
        Request("eval_ppl (model=a)", 2, 8000, 1, 120),  # fits n1, but debug allows 60 min
        Request("prune (model=a)", 1, 1000, 0, 10, "long"),
        Request("collect", 1, 1000, 0, 10),
    ]
    assert unschedulable(requests, nodes, limits, default) == [
        "job eval_ppl (model=a) asks 120 min; partition debug allows at most 60 min",
        "job prune (model=a) asks for partition 'long', which the cluster lacks",
        "job recover (model=a) asks 4 CPUs, 48000 MB, 1 GPUs, 30 min; no node of partition debug has that "
        "(n1: 2 CPUs, 21700 MB, 2 GPUs)",
    ]


def test_check_cluster_raises_one_error_from_scontrol(monkeypatch):
    monkeypatch.setattr(cluster.shutil, "which", lambda name: "/usr/bin/scontrol")
    monkeypatch.setattr(cluster, "_scontrol", lambda *args: NODES if args[1] == "node" else PARTITIONS)
    with pytest.raises(
        PrunebenchError, match=r"^jobs the cluster cannot schedule \(they would stay PENDING\): job x asks"
    ):
        check_cluster([Request("x", 128, 1000, 0, 10, "gpu"), Request("y", 1, 1000, 0, 10)])
    check_cluster([Request("y", 1, 1000, 0, 10)])  # fits: no error


FAKE_SLURM = {
    # A one-node cluster of 2 CPUs (the machine docs/slurm.md's hand test used to advertise): the
    # profile's model rules ask 4 (and no GPU for the CPU model). sbatch records any submission (none).
    "scontrol": """case "$*" in
  *"show node"*) echo "NodeName=localhost CPUTot=2 RealMemory=21700 Gres=gpu:2 Partitions=debug State=IDLE" ;;
  *"show partition"*) echo "PartitionName=debug Default=YES MaxTime=UNLIMITED Nodes=localhost" ;;
  *"show config"*) echo "MinJobAge = 300 sec" ;;
  *) exit 1 ;;
esac""",
    "sinfo": 'echo "debug*"',
    "sbatch": 'echo "$*" >> "$(dirname "$0")/submitted"; exit 1',
    "sacct": "exit 0",
    "sacctmgr": "echo ci",
    "squeue": "exit 0",
}


@pytest.mark.slow
def test_the_workflow_stops_before_submitting_jobs_no_node_can_run(tmp_path):
    """Through the Slurm executor and profile against stand-in Slurm commands: the onstart check
    names the jobs and Snakemake exits before any sbatch."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKE_SLURM.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    for entry in repo.iterdir():
        if not entry.name.startswith(".") and entry.name not in ("results", "logs"):
            (work / entry.name).symlink_to(entry)
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    run = subprocess.run(
        [
            *(
                sys.executable,
                "-m",
                "snakemake",
                "--profile",
                "profiles/slurm",
                "--configfile",
                "config/tiny.yaml",
            ),
            *(
                "--default-resources",
                "slurm_partition=debug",
                "slurm_account=ci",
                "mem_mb=4000",
                "runtime=30",
            ),
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 1, run.stderr[-3000:]
    assert (
        "prunebench: error: jobs the cluster cannot schedule (they would stay PENDING): job eval_latency"
        in run.stderr
    )
    assert (
        "job score (model=tiny, library_method=magnitude-sp) asks 4 CPUs, 4000 MB, 0 GPUs, 16 min; no node "
        "of partition debug has that (localhost: 2 CPUs, 21700 MB, 2 GPUs)"
    ) in run.stderr
    assert not (bin_dir / "submitted").exists()
