"""The Snakemake study: config validation, dry runs of every config, a tiny end-to-end run, resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from prunebench.errors import PrunebenchError
from prunebench.study import validate_config

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "config" / "tiny.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# Timings depend on the machine; everything else in the table must be reproducible.
TIMED_KINDS = {"latency", "speedup", "cost"}


def _workdir(path: Path) -> Path:
    """A fresh working directory that sees the repository's data, so results/ lands in tmp."""
    path.mkdir(parents=True, exist_ok=True)
    for name in ("resources", "tests", "report", "config"):
        (path / name).symlink_to(REPO / name)
    return path


def _snakemake(workdir: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, **kwargs)


def _deterministic(table: pd.DataFrame) -> pd.DataFrame:
    return table[~table["kind"].isin(TIMED_KINDS)].drop(columns=["versions"]).reset_index(drop=True)


@pytest.mark.parametrize("config", ["config.yaml", *sorted(p.name for p in (REPO / "config").glob("*.yaml"))])
def test_every_config_dry_runs(tmp_path, config):
    path = REPO / config if config == "config.yaml" else REPO / "config" / config
    result = _snakemake(_workdir(tmp_path / "w"), "-n", "--configfile", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rule all" in result.stdout or "Nothing to be done" in result.stdout


def _tiny() -> dict:
    return yaml.safe_load(TINY.read_text())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.update(colour="blue"), r"config: Additional properties are not allowed \('colour'"),
        (
            lambda c: c.update(ratios=[1.0]),
            r"config\.ratios\.0: 1\.0 is greater than or equal to the maximum of 1",
        ),
        (lambda c: c["methods"].update({"flapp": {}}), r"config\.methods\.flapp: unknown method"),
        (lambda c: c["recovery"].update({"qlora": {}}), r"config\.recovery.*'qlora' is not one of"),
        (lambda c: c["models"]["tiny"].update(path="no/such/dir/here"), r"config\.models\.tiny\.path"),
        (
            lambda c: c["methods"].update({"mine": {"kind": "rule"}}),
            r"needs workflow/rules/methods/mine\.smk",
        ),
        (
            lambda c: c["recovery"]["lora"].update(methods=["flap"]),
            r"config\.recovery\.lora\.methods: \['flap'\]",
        ),
        (lambda c: c["recovery"]["lora"].update(ratios=[0.5]), r"config\.recovery\.lora\.ratios: \[0\.5\]"),
        (
            lambda c: c["recovery"]["lora"]["params"].update(lora_rank=4),
            r"config\.recovery\.lora\.params: unknown recovery option 'lora_rank'; did you mean lora_r",
        ),
        (
            lambda c: c["recovery"]["lora"]["params"].update(lr=1e-3),
            r"config\.recovery\.lora\.params\.lr: set it as config\.recovery\.lora\.lr",
        ),
    ],
)
def test_bad_config_names_the_key(change, message, monkeypatch):
    monkeypatch.chdir(REPO)
    config = _tiny()
    change(config)
    with pytest.raises(PrunebenchError, match=message):
        validate_config(config)


def test_bad_config_stops_snakemake_before_any_job(tmp_path):
    config = _tiny()
    config["ratios"] = [1.5]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    workdir = _workdir(tmp_path / "w")
    result = _snakemake(workdir, "--cores", "1", "--configfile", str(tmp_path / "bad.yaml"))
    assert result.returncode != 0
    assert "config.ratios.0" in result.stderr
    assert not (workdir / "results").exists()


@pytest.mark.slow
def test_tiny_study_end_to_end_and_resume(tmp_path):
    config = _tiny()
    full = _workdir(tmp_path / "full")
    result = _snakemake(full, "--cores", "2", "--configfile", str(TINY))
    assert result.returncode == 0, result.stderr[-4000:]
    table = pd.read_csv(full / "results" / "tables" / "results.csv")
    variants = 1 + len(config["methods"]) * len(config["ratios"]) * len(config["recovery"])
    per_variant = table.groupby(["method", "target_ratio", "recovery"]).size()
    assert len(per_variant) == variants
    assert {"ppl", "zeroshot", "latency", "speedup", "cost"} <= set(table["kind"])
    assert {"acc", "acc_norm"} <= set(table.loc[table["kind"] == "zeroshot", "metric"])
    for column in (
        "achieved_decoder_ratio",
        "achieved_total_ratio",
        "attention_removed",
        "mlp_removed",
        "dataset",
        "seqlen",
        "task",
        "device",
        "dtype",
    ):
        assert column in table
    lora = json.loads(next((full / "results" / "tiny").glob("*/r0.30/lora/model/summary.json")).read_text())
    assert lora["hyper_parameters"]["lora_r"] == 4  # the config's recovery params reach the job
    assert lora["hyper_parameters"]["target_modules"] == ["q_proj", "down_proj"]
    pruned = table[table["method"] != "dense"]
    assert (abs(pruned["achieved_decoder_ratio"] - pruned["target_ratio"]) < 0.05).all()
    assert (full / "results" / "report" / "index.html").stat().st_size > 10_000
    assert (full / "results" / "tables" / "summary.csv").is_file()

    # Interrupt a second run midway, then resume it.
    interrupted = _workdir(tmp_path / "resumed")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(interrupted), "--cores", "1",
           "--configfile", str(TINY)]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )
    # Kill once a job downstream of the first pruned model has finished: by then Snakemake has
    # recorded the model's job as complete, so resuming must not redo it.
    evaluated: list[Path] = []
    deadline = time.time() + 600
    while not evaluated and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        evaluated = sorted((interrupted / "results" / "tiny").glob("*/r0.30/none/eval/ppl_demo_32.json"))
    assert proc.poll() is None, "the run finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert evaluated, "no pruned variant was evaluated before the deadline"
    first = evaluated[0].parents[1] / "model" / "config.json"
    stamp = first.stat().st_mtime_ns
    shutil.rmtree(interrupted / ".snakemake" / "locks", ignore_errors=True)
    result = _snakemake(interrupted, "--cores", "2", "--configfile", str(TINY), "--rerun-incomplete")
    assert result.returncode == 0, result.stderr[-4000:]
    assert first.stat().st_mtime_ns == stamp, "a finished job was redone"
    resumed = pd.read_csv(interrupted / "results" / "tables" / "results.csv")
    pd.testing.assert_frame_equal(_deterministic(resumed), _deterministic(table))
