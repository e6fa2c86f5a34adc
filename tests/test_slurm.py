"""The workflow runs unchanged on a real Slurm cluster: profiles/slurm against a one-node cluster on localhost.

The session fixture starts the cluster with ci/slurm-localhost.sh (Debian's Slurm with slurmdbd and MariaDB,
stand-in GPUs) and stops it at the end. The test runs the workflow once locally (profiles/default) and once
through `snakemake-executor-plugin-slurm` (profiles/slurm), then checks in Slurm's accounting that every job
went through sbatch with the resources the profile asks for, and that both runs wrote the same table.

Needs root and apt-get (it installs Debian packages); set PRUNEBENCH_SKIP_SLURM=1 to skip it.
"""

import collections
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = REPO / "ci" / "slurm-localhost.sh"
SLURM_PROFILE = REPO / "profiles" / "slurm"

# The workflow under test: the directory it runs in, and its config file relative to that directory.
# The tiny study. Each run gets a working directory of its own that links to every entry of WORKFLOW_ROOT
# except outputs (OUTPUT_DIRS) and dot entries, so relative paths in the Snakefile and config resolve.
WORKFLOW_ROOT = REPO
CONFIGFILE: str | None = "config/tiny.yaml"
OUTPUT_DIRS = ("results", "logs")
RESULT_TABLE = "results/tiny/tables/results.csv"
# Rows that legitimately differ between two runs (wall-clock measurements) and the versions column.
VOLATILE_KINDS = ("latency", "speedup", "cost")

# What a site would set; the local cluster has this partition and account.
PARTITION = "debug"
ACCOUNT = "ci"
# Stand-in GPUs on the local node: two GPU jobs can run at once.
GPUS = 2
# Its own state directory, so that a cluster started by hand from the default one is not touched.
CLUSTER_STATE = "/tmp/prunebench-slurm-pytest"
# Wall-clock limit of the Slurm run. The plugin can wait forever when status checks fail and ignores
# SIGTERM then, hence `timeout -k`.
RUN_TIMEOUT_S = 900


def _skip_reason() -> str | None:
    if os.environ.get("PRUNEBENCH_SKIP_SLURM") == "1":
        return "PRUNEBENCH_SKIP_SLURM=1"
    if sys.platform != "linux":
        return "the local Slurm cluster needs Linux"
    if os.geteuid() != 0:
        return "starting a local Slurm cluster needs root (it installs packages and starts daemons)"
    if shutil.which("apt-get") is None:
        return "no apt-get to install Debian's Slurm, munge and MariaDB"
    return None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_skip_reason() is not None, reason=f"Slurm test skipped: {_skip_reason()}"),
]


def _profile() -> dict:
    return yaml.safe_load((SLURM_PROFILE / "config.yaml").read_text())


def _env() -> dict[str, str]:
    """The environment of this interpreter: its bin directory first, so jobs find its python and snakemake."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _cluster(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLUSTER_SCRIPT), command], env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running one-node cluster large enough for the profile's biggest job; stopped afterwards."""
    profile = _profile()
    resources = [profile["default-resources"], *profile["set-resources"].values()]
    env = _env() | {
        "PRUNEBENCH_SLURM_STATE": CLUSTER_STATE,
        "PRUNEBENCH_SLURM_PARTITION": PARTITION,
        "PRUNEBENCH_SLURM_ACCOUNT": ACCOUNT,
        "PRUNEBENCH_SLURM_GPUS": str(GPUS),
        # Advertise enough for GPUS jobs of the profile's size at once (oversubscribing the real CPUs).
        "PRUNEBENCH_SLURM_CPUS": str(GPUS * max(profile["set-threads"].values())),
        "PRUNEBENCH_SLURM_MEM_MB": str(GPUS * max(r["mem_mb"] for r in resources if "mem_mb" in r)),
    }
    start = time.monotonic()
    up = _cluster("up", env)
    if up.returncode != 0:
        _cluster("down", env)
        pytest.fail(f"ci/slurm-localhost.sh up failed:\n{up.stdout}\n{up.stderr}")
    print(f"\nslurm cluster up in {time.monotonic() - start:.1f} s")
    yield
    down = _cluster("down", env)
    assert down.returncode == 0, f"ci/slurm-localhost.sh down failed:\n{down.stdout}\n{down.stderr}"


def _workdir(path: Path) -> Path:
    """A fresh working directory that links to the workflow's files, without its outputs."""
    path.mkdir()
    for entry in WORKFLOW_ROOT.iterdir():
        if not entry.name.startswith(".") and entry.name not in OUTPUT_DIRS:
            (path / entry.name).symlink_to(entry)
    return path


def _snakemake(workdir: Path, *args: str, timeout_s: int) -> subprocess.CompletedProcess:
    config = ["--configfile", CONFIGFILE] if CONFIGFILE else []
    command = [sys.executable, "-m", "snakemake", *config, *args]
    return subprocess.run(
        ["timeout", "-k", "10", str(timeout_s), *command],
        cwd=workdir,
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )


def _table(workdir: Path) -> pd.DataFrame:
    table = pd.read_csv(workdir / RESULT_TABLE)
    return table[~table["kind"].isin(VOLATILE_KINDS)].drop(columns=["versions"]).reset_index(drop=True)


def _sacct(run_id: str, since: str) -> pd.DataFrame:
    """One row per allocation of the snakemake run (the plugin names every job after the run id)."""
    fields = ["JobID", "State", "Comment", "Account", "Partition", "AllocTRES", "TimelimitRaw"]
    out = subprocess.run(
        ["sacct", "-X", "-P", "-n", "-S", since, "--name", run_id, "-o", ",".join(fields)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if line]
    return pd.DataFrame(rows, columns=fields)


def _tres(alloc: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in alloc.split(",") if item)


def _megabytes(amount: str) -> int:
    """Slurm's memory amounts ('4000M', '64G') in MB."""
    return round(float(amount[:-1]) * {"M": 1, "G": 1024, "T": 1024**2}[amount[-1]])


def _rule(comment: str) -> str:
    """The rule name from the plugin's job comment 'rule_<name>' or 'rule_<name>_wildcards_<values>'."""
    match = re.fullmatch(r"rule_(\w+?)(?:_wildcards_.*)?", comment)
    assert match, f"unexpected job comment {comment!r}"
    return match.group(1)


def _sized(rule: str) -> dict:
    """Memory and run time the workflow computes for a job of ``rule`` on the tiny study's model."""
    from prunebench.study import sizing

    study = yaml.safe_load((REPO / CONFIGFILE).read_text())
    spec = {"dtype": "float32", **next(iter(study["models"].values()))}
    params = sizing.parameter_count({**spec, "path": str(REPO / spec["path"])})
    if rule == "recover":
        lora = study["recovery"]["lora"]
        return {
            "mem_mb": sizing.memory_mb(rule, params, spec["dtype"]),
            "runtime": sizing.recovery_runtime_min(params, sizing.recovery_tokens(lora), False),
        }
    if rule in ("score", "prune", "apply_rule_plan", "eval_ppl", "eval_zeroshot", "eval_latency"):
        return {
            "mem_mb": sizing.memory_mb(rule, params, spec["dtype"]),
            "runtime": sizing.runtime_min(rule, params),
        }
    return {}


def test_workflow_through_slurm_matches_local_run(slurm_cluster, tmp_path):
    local = _snakemake(_workdir(tmp_path / "local"), "--cores", "2", timeout_s=RUN_TIMEOUT_S)
    assert local.returncode == 0, f"local run failed:\n{local.stderr[-4000:]}"

    profile = _profile()
    # A command-line --default-resources replaces the profile's mapping: repeat it, plus the site values.
    defaults = profile["default-resources"] | {"slurm_partition": PARTITION, "slurm_account": ACCOUNT}
    start = time.monotonic()
    since = time.strftime("%Y-%m-%dT%H:%M:%S")
    slurm = _snakemake(
        _workdir(tmp_path / "slurm"),
        "--profile",
        str(SLURM_PROFILE),
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--default-resources",
        *(f"{key}={value}" for key, value in defaults.items()),
        timeout_s=RUN_TIMEOUT_S,
    )
    print(f"\nworkflow through slurm in {time.monotonic() - start:.1f} s")
    log = slurm.stdout + slurm.stderr
    assert slurm.returncode == 0, (
        f"Slurm run failed (rc {slurm.returncode}; 124/137: timeout):\n{log[-6000:]}"
    )

    run_id = re.search(r"SLURM run ID: (\S+)", log)
    assert run_id, f"no SLURM run ID in the snakemake output:\n{log[-3000:]}"
    jobs = _sacct(run_id.group(1), since)
    # Every job snakemake ran (not local rules such as `all`) is one Slurm allocation that completed.
    executed = collections.Counter(re.findall(r"^rule (\w+):$", log, flags=re.MULTILINE))
    submitted = collections.Counter(_rule(comment) for comment in jobs.Comment)
    assert executed, "snakemake ran no job through Slurm"
    assert submitted == executed
    assert set(jobs.State) == {"COMPLETED"}, jobs.to_string()
    assert set(jobs.Account) == {ACCOUNT} and set(jobs.Partition) == {PARTITION}, jobs.to_string()

    # Each allocation has what the profile asks for its rule: CPUs, memory, run time, and GPUs; the
    # model rules' memory and time are sized from the tiny model (recover: its CPU model asks no GPU).
    for job in jobs.itertuples():
        rule = _rule(job.Comment)
        want = profile["default-resources"] | _sized(rule) | profile["set-resources"].get(rule, {})
        tres = _tres(job.AllocTRES)
        if rule in profile["set-threads"]:
            assert tres["cpu"] == str(profile["set-threads"][rule]), (rule, job.AllocTRES)
        assert _megabytes(tres["mem"]) == want["mem_mb"], (rule, job.AllocTRES)
        assert job.TimelimitRaw == str(want["runtime"]), (rule, job.TimelimitRaw)
        assert tres.get("gres/gpu") == (str(want["gpu"]) if "gpu" in want else None), (rule, job.AllocTRES)

    pd.testing.assert_frame_equal(_table(tmp_path / "slurm"), _table(tmp_path / "local"))
