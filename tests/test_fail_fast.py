"""Bad input fails in seconds, in one line naming the problem, before any model is loaded (issue #22).

Each kind of input a new user gets wrong is rebuilt here: a study config checked when the DAG is
built (all problems together, each naming its config key), a config file Snakemake would read
loosely, and the files, devices and options of the command line, whose library errors are wrapped.
"""

from __future__ import annotations

import errno
import re
import shutil
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import SAMPLE_TEXT, make_tiny_tokenizer
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from prunebench.cli import main
from prunebench.data.calibration import SAMPLES_KEY, calibration_samples, tokenize
from prunebench.errors import PrunebenchError
from prunebench.io import atomic_file
from prunebench.methods.blockpruner import example_rows
from prunebench.methods.finercut import leading_rows
from prunebench.study import validate_config
from prunebench.study.loading import load_study_file
from prunebench.study.script import logged

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = REPO / "tests" / "data" / "tiny-model"  # context 512, vocabulary 4096, 4 layers


def _tiny() -> dict:
    return yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if any model's weights are loaded: every check must come before."""

    def loaded(cls, *args, **kwargs):
        pytest.fail("the model was loaded before the bad input was refused")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(loaded))


def _latin1(path: Path) -> Path:
    path.write_bytes(("plain ascii text. " * 40 + "caf\u00e9 au lait\n").encode("latin-1"))
    return path


# --- the study, checked when the DAG is built ---------------------------------------------------


def _study_cases(tmp: Path) -> list[tuple[str, object, str]]:
    truncated = tmp / "truncated-model"
    shutil.copytree(TINY_MODEL, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    pickled = tmp / "pickled-model"
    shutil.copytree(TINY_MODEL, pickled, ignore=shutil.ignore_patterns("*.safetensors"))
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    latin = _latin1(tmp / "latin1.txt")
    return [
        (
            "ShortGPT at a ratio beyond its layers",
            lambda c: c.update(methods={"shortgpt": {}}, ratios=[0.9]),
            r"config\.methods\.shortgpt at ratio 0\.9 \(model tiny\): shortgpt: target ratio 0\.9 needs more "
            r"blocks than may be removed: 3 of 4 blocks",
        ),
        (
            "CFSP at an unreachable ratio",
            lambda c: c.update(methods={"cfsp": {}}, ratios=[0.95]),
            r"config\.methods\.cfsp at ratio 0\.95 \(model tiny\): cfsp prunes FFN channels only: at most",
        ),
        (
            "a perplexity window beyond the context",
            lambda c: c["evaluation"]["ppl"].update(seqlens=[32, 1024]),
            r"config\.evaluation\.ppl\.seqlens 1024 exceeds the model's context of 512 tokens",
        ),
        (
            "latency prompt + new tokens beyond the context",
            lambda c: c["evaluation"]["latency"].update(prompt_lengths=[16, 510]),
            r"config\.evaluation\.latency: longest prompt \+ new_tokens = 514 exceeds the model's context of 512",
        ),
        (
            "a missing calibration source",
            lambda c: c["calibration"].update(source="resources/demo/corpuss"),
            r"config\.calibration\.source: text source 'resources/demo/corpuss' is neither",
        ),
        (
            "missing recovery data",
            lambda c: c["recovery"]["lora"].update(data="no/such/data.jsonl"),
            r"config\.recovery\.lora\.data: .*no/such/data\.jsonl",
        ),
        (
            "a missing perplexity text",
            lambda c: c["evaluation"]["ppl"]["datasets"].update(demo="resources/no-such.txt"),
            r"config\.evaluation\.ppl\.datasets\.demo: text source 'resources/no-such\.txt' is neither",
        ),
        (
            "a missing lm-eval include path",
            lambda c: c["evaluation"]["zeroshot"].update(include_path="resources/demo/taskz"),
            r"config\.evaluation\.zeroshot\.include_path: folder resources/demo/taskz does not exist",
        ),
        (
            "a misspelt lm-eval task",
            lambda c: c["evaluation"]["zeroshot"].update(tasks=["demo_clze"]),
            r"config\.evaluation\.zeroshot\.tasks: lm-eval does not know the task 'demo_clze' "
            r"\(close matches: demo_cloze",
        ),
        (
            "a device name torch does not know",
            lambda c: c["models"]["tiny"].update(device="gpu"),
            r"config\.models\.tiny\.device: unknown device 'gpu'",
        ),
        (
            "a mistyped local model directory",
            lambda c: c["models"]["tiny"].update(path="tests/tiny-modle"),
            r"config\.models\.tiny\.path: model directory 'tests/tiny-modle' does not exist \(tests/ is a local folder",
        ),
        (
            "truncated model weights",
            lambda c: c["models"]["tiny"].update(path=str(truncated)),
            r"config\.models\.tiny\.path: .*model\.safetensors is truncated: its header declares \d+ bytes",
        ),
        (
            "a pickle-only checkpoint",
            lambda c: c["models"]["tiny"].update(path=str(pickled)),
            r"config\.models\.tiny\.path: .* holds its weights only as pickles \(pytorch_model\.bin\); "
            r"prunebench reads safetensors only",
        ),
        (
            "an unknown text encoding",
            lambda c: c.update(text_encoding="utf-9"),
            r"config\.text_encoding: unknown text encoding 'utf-9'",
        ),
        (
            "calibration text that is not UTF-8",
            lambda c: c["calibration"].update(source=str(latin)),
            rf"config\.calibration\.source: {re.escape(str(latin))} is not utf-8 text: byte 0xe9 at offset 723 "
            r"cannot be decoded; give the file's encoding",
        ),
    ]


@pytest.mark.parametrize("index", range(15))
def test_each_bad_study_is_one_line_naming_the_key(tmp_path, monkeypatch, no_loading, index):
    monkeypatch.chdir(REPO)
    _, change, message = _study_cases(tmp_path)[index]
    config = _tiny()
    change(config)
    with pytest.raises(PrunebenchError) as caught:
        validate_config(config)
    assert str(caught.value).startswith("invalid config: ") and "\n" not in str(caught.value)
    assert re.search(message, str(caught.value)), str(caught.value)


def test_the_same_text_read_as_its_encoding_passes(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    config = _tiny()
    config["calibration"]["source"] = str(_latin1(tmp_path / "latin1.txt"))
    config["text_encoding"] = "latin-1"
    assert validate_config(config)["text_encoding"] == "latin-1"


def test_every_problem_of_a_study_is_reported_together(monkeypatch, no_loading):
    monkeypatch.chdir(REPO)
    config = _tiny()
    config["calibration"]["source"] = "no-such-corpus"
    config["evaluation"]["ppl"]["seqlens"] = [1024]
    config["models"]["tiny"]["device"] = "gpu"
    config["evaluation"]["zeroshot"]["tasks"] = ["demo_clze"]
    with pytest.raises(PrunebenchError) as caught:
        validate_config(config)
    lines = str(caught.value).splitlines()
    assert lines[0] == "invalid config, 4 problems:"
    keys = [
        "config.models.tiny.device",
        "config.calibration.source",
        "config.evaluation.ppl.seqlens",
        "config.evaluation.zeroshot.tasks",
    ]
    assert sorted(line.strip().split(":")[0].split(" ")[0] for line in lines[1:]) == sorted(keys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_a_cuda_study_on_a_machine_without_cuda_is_refused(monkeypatch):
    monkeypatch.chdir(REPO)
    config = _tiny()
    config["models"]["tiny"]["device"] = "cuda"
    validate_config(config)  # where the jobs run elsewhere (a cluster), the login node has no GPU
    with pytest.raises(
        PrunebenchError, match=r"config\.models\.tiny\.device: device 'cuda' cannot be used: "
    ):
        validate_config(config, devices=True)


# --- study files: read strictly -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "seed: 0\nratios: [0.3]\nseed: 1\n",
            r"line 3, column 1: key 'seed' is given twice \(first on line 1\)",
        ),
        ("models:\n  tiny: {path: x\nratios: [0.3]\n", r"line 3, column \d+: "),
        ("ratios: [0.3\nseed: 0\n", r"line \d+, column \d+: "),
        ("- a\n- b\n", r"must be a mapping of keys"),
    ],
)
def test_a_study_file_is_read_strictly(tmp_path, text, message):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(PrunebenchError, match=rf"^config file {re.escape(str(path))}[ ,].*{message}"):
        load_study_file(path)


def test_a_duplicate_key_stops_snakemake_before_any_job(tmp_path):
    from test_study import _snakemake, _workdir

    text = (REPO / "config" / "tiny.yaml").read_text() + "seed: 3\n"
    (tmp_path / "dup.yaml").write_text(text)
    workdir = _workdir(tmp_path / "w")
    result = _snakemake(workdir, "-n", "--configfile", str(tmp_path / "dup.yaml"))
    assert result.returncode != 0
    assert "prunebench: error: config file" in result.stderr
    assert "key 'seed' is given twice" in result.stderr
    assert not (workdir / "results").exists()


# --- the command line: files, devices, options ----------------------------------------------------


def _model_copy(tmp: Path, name: str) -> Path:
    path = tmp / name
    shutil.copytree(TINY_MODEL, path)
    return path


def _cli_cases(tmp: Path) -> list[tuple[str, list[str], str]]:
    text = tmp / "text.txt"
    text.write_text(SAMPLE_TEXT)
    truncated = _model_copy(tmp, "truncated")
    (truncated / "model.safetensors").write_bytes((truncated / "model.safetensors").read_bytes()[:5000])
    garbage = _model_copy(tmp, "garbage")
    (garbage / "model.safetensors").write_bytes(b"PK\x03\x04 this is a zip file, not safetensors" * 10)
    pickled = tmp / "pickled"
    shutil.copytree(TINY_MODEL, pickled, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save({"w": torch.zeros(2)}, pickled / "pytorch_model.bin")
    good = torch.randint(0, 4096, (2, 16))
    save_file({SAMPLES_KEY: good}, str(tmp / "samples.safetensors"))
    (tmp / "samples-truncated.safetensors").write_bytes((tmp / "samples.safetensors").read_bytes()[:-40])
    save_file({"ids": good}, str(tmp / "samples-name.safetensors"))
    save_file({SAMPLES_KEY: good + 4096}, str(tmp / "samples-vocab.safetensors"))
    (tmp / "samples-text.safetensors").write_text("input_ids\n1 2 3\n")
    latin = _latin1(tmp / "latin1.txt")
    (tmp / "a-file").write_text("x")
    model = str(TINY_MODEL)
    ppl = ["eval", "ppl", "--text", str(text), "--seqlen", "32", "--out", str(tmp / "o")]
    score = ["score", "--model", model, "--method", "wanda-sp", "--out", str(tmp / "o")]
    hint = r"; give the file's encoding \(--encoding latin-1"
    return [
        (
            "a truncated model.safetensors",
            [*ppl, "--model", str(truncated)],
            r"model\.safetensors is truncated",
        ),
        (
            "a model.safetensors that is no safetensors file",
            [*ppl, "--model", str(garbage)],
            r"model\.safetensors is not a safetensors file",
        ),
        (
            "a pickle-only checkpoint",
            [*ppl, "--model", str(pickled)],
            r"holds its weights only as pickles \(pytorch_model\.bin\); prunebench reads safetensors only",
        ),
        (
            "a mistyped local model directory",
            [*ppl, "--model", "tests/tiny-modle"],
            r"model not found: tests/tiny-modle: no local directory of that name .*; tests/ is a local folder",
        ),
        (
            "a truncated samples file",
            [*score, "--samples", str(tmp / "samples-truncated.safetensors")],
            r"samples-truncated\.safetensors is truncated",
        ),
        (
            "a samples file with another tensor name",
            [*score, "--samples", str(tmp / "samples-name.safetensors")],
            r"samples-name\.safetensors holds no tensor 'input_ids' of calibration samples \(found: ids\)",
        ),
        (
            "samples with ids beyond the vocabulary",
            [*score, "--samples", str(tmp / "samples-vocab.safetensors")],
            r"samples-vocab\.safetensors: token ids range from \d+ to \d+, outside the model's vocabulary of 4096",
        ),
        (
            "a samples file that is text",
            [*score, "--samples", str(tmp / "samples-text.safetensors")],
            r"samples-text\.safetensors is not a safetensors file",
        ),
        (
            "perplexity text that is not UTF-8",
            [
                "eval",
                "ppl",
                "--model",
                model,
                "--text",
                str(latin),
                "--seqlen",
                "32",
                "--out",
                str(tmp / "o"),
            ],
            rf"{re.escape(str(latin))} is not utf-8 text: byte 0xe9 at offset 723 cannot be decoded{hint}",
        ),
        (
            "calibration text that is not UTF-8",
            [*score, "--calib", str(latin)],
            rf"{re.escape(str(latin))} is not utf-8 text: byte 0xe9 at offset 723 cannot be decoded{hint}",
        ),
        (
            "an unknown --encoding",
            [*ppl, "--model", model, "--encoding", "utf-9"],
            "unknown text encoding 'utf-9'",
        ),
        (
            "a device torch does not know",
            [*ppl, "--model", model, "--device", "gpu"],
            r"unknown device 'gpu'",
        ),
        (
            "a CUDA device this machine lacks",
            [*ppl, "--model", model, "--device", f"cuda:{torch.cuda.device_count() + 7}"],
            r"device 'cuda:\d+' cannot be used: ",
        ),
        (
            "--max-windows 0",
            [*ppl, "--model", model, "--max-windows", "0"],
            r"max_windows must be at least 1",
        ),
        (
            "--out under a file",
            [
                "eval",
                "ppl",
                "--model",
                model,
                "--text",
                str(text),
                "--seqlen",
                "32",
                "--out",
                str(tmp / "a-file" / "o"),
            ],
            r"cannot write .*a-file/o: .*a-file is not a directory",
        ),
        (
            "--out where nothing can be created",
            [
                "eval",
                "ppl",
                "--model",
                model,
                "--text",
                str(text),
                "--seqlen",
                "32",
                "--out",
                "/proc/prunebench/o",
            ],
            r"cannot write /proc/prunebench/o: nothing can be created in /proc",
        ),
        (
            "a directory --out that is a file",
            ["score", "--model", model, "--method", "magnitude-sp", "--out", str(tmp / "a-file")],
            r"refusing to replace .*a-file: it is a file, not a scores directory",
        ),
        (
            "a file --out that is a directory",
            [*ppl[:-1], str(tmp), "--model", model],
            r"refusing to replace .*: it is a directory, not a",
        ),
    ]


@pytest.mark.parametrize("index", range(18))
def test_each_bad_command_is_one_line_before_loading(tmp_path, monkeypatch, capsys, no_loading, index):
    monkeypatch.chdir(REPO)
    _, argv, message = _cli_cases(tmp_path)[index]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("prunebench: error: "), err
    assert re.search(message, err[0]), err[0]
    assert not (tmp_path / "o").exists()


def test_a_missing_local_model_is_not_retried_on_the_hub(tmp_path, monkeypatch, capsys, no_loading):
    import huggingface_hub

    from prunebench.models import hub

    calls = []

    def unreachable(*args, **kwargs):
        calls.append(kwargs.get("timeout"))
        raise ConnectionError("Name or service not known")

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", unreachable)
    hub.look_up.cache_clear()
    argv = ["info", "--model", "some/dir"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert calls == [hub.HUB_TIMEOUT], "the Hub is asked once, with a timeout, not retried"
    assert err == (
        f"prunebench: error: model not found: some/dir: no local directory of that name (in {tmp_path}), "
        "and as a Hugging Face Hub id the Hub cannot be reached (Name or service not known) and it is not "
        "in the local cache"
    )
    hub.look_up.cache_clear()


# --- writing: a full disk is one line and leaves nothing --------------------------------------------


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    target = tmp_path / "new" / "folder" / "out.json"
    full = r"^no space left on the device to write .*new/folder/out\.json; nothing"
    with pytest.raises(PrunebenchError, match=full), atomic_file(target) as tmp:
        tmp.write_text("partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == [], "no temporary file and no folder made for it are left"


def test_recovery_checkpoint_on_a_full_disk_leaves_no_empty_folder(tmp_path, monkeypatch):
    from prunebench.recovery import training

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc] . unexpected pos 64 vs 0")

    checkpointer = training.Checkpointer(str(tmp_path / "resume"), "fp")
    monkeypatch.setattr(training.torch, "save", full)
    monkeypatch.setattr("prunebench.io._disk_full", lambda path: True)
    with pytest.raises(PrunebenchError, match=r"^no space left on the device to write .*resume/"):
        checkpointer.save({"step": 1})
    assert not (tmp_path / "resume").exists()


# --- job logs keep the traceback ------------------------------------------------------------------


def test_an_unexpected_error_in_a_job_is_written_to_its_log(tmp_path, capfd):
    log = tmp_path / "job.log"
    job = SimpleNamespace(log=[str(log)], rule="score", threads=1)
    with pytest.raises(ZeroDivisionError), logged(job):
        print("scoring")
        _ = 1 / 0
    written = log.read_text()
    assert "scoring" in written and "Traceback (most recent call last)" in written
    assert "ZeroDivisionError: division by zero" in written
    err = capfd.readouterr().err
    assert f"unexpected ZeroDivisionError in rule score: division by zero (traceback in {log})" in err


def test_a_prunebench_error_in_a_job_is_one_line_in_its_log(tmp_path):
    log = tmp_path / "job.log"
    with pytest.raises(SystemExit), logged(SimpleNamespace(log=[str(log)], rule="prune", threads=1)):
        raise PrunebenchError("ratio 0.99 cannot be reached")
    assert log.read_text().strip().splitlines()[-1] == "prunebench: error: ratio 0.99 cannot be reached"


# --- calibration: one length rule, no false warning -------------------------------------------------


def test_every_calibration_sampler_takes_a_text_of_exactly_the_tokens_it_needs(tiny_tokenizer, tiny_text):
    ids = tokenize(tiny_tokenizer, tiny_text)
    seqlen = 16
    exact = tiny_tokenizer.decode(ids[:seqlen])
    assert tokenize(tiny_tokenizer, exact).numel() == seqlen
    assert calibration_samples(tiny_tokenizer, exact, 2, seqlen, seed=0).shape == (2, seqlen)
    one_short = tiny_tokenizer.decode(ids[: seqlen - 1])
    with pytest.raises(
        PrunebenchError,
        match=rf"has {seqlen - 1} tokens; one sample of seqlen={seqlen} tokens needs at least {seqlen}",
    ):
        calibration_samples(tiny_tokenizer, one_short, 2, seqlen, seed=0)

    # BlockPruner's rows and FinerCut's leading rows, with the tokenizer's own special tokens.
    assert example_rows(tiny_tokenizer, [exact], 1, seqlen, seed=0).shape == (1, seqlen)
    with pytest.raises(
        PrunebenchError,
        match=rf"has {seqlen - 1} tokens; one row of seqlen={seqlen} tokens needs at least {seqlen}",
    ):
        example_rows(tiny_tokenizer, [one_short], 1, seqlen, seed=0)
    assert leading_rows(tiny_tokenizer, [exact], 1, seqlen).shape == (1, seqlen)
    with pytest.raises(
        PrunebenchError,
        match=rf"has {seqlen - 1} tokens; nsamples x seqlen = 1 x {seqlen} needs at least {seqlen}",
    ):
        leading_rows(tiny_tokenizer, [one_short], 1, seqlen)


def test_tokenizing_a_long_corpus_prints_no_false_length_warning(tiny_text, caplog):
    def warned() -> bool:
        return any("longer than the specified maximum" in r.getMessage() for r in caplog.records)

    tokenizer = make_tiny_tokenizer(tiny_text)
    tokenizer.model_max_length = 8
    tokenize(tokenizer, tiny_text)
    assert not warned()
    tokenizer(tiny_text)  # the tokenizer's own call warns: the check above can fail
    assert warned()


def test_a_ratio_0_prune_runs_no_search(tmp_path, monkeypatch):
    from prunebench.methods.wanda_sp import WandaSp
    from prunebench.steps import prune_model

    monkeypatch.setattr(WandaSp, "score", lambda *a, **k: pytest.fail("scored at ratio 0"))
    monkeypatch.setattr(WandaSp, "select", lambda *a, **k: pytest.fail("searched at ratio 0"))
    plan = prune_model(str(TINY_MODEL), "wanda-sp", 0.0, tmp_path / "p", calib="no-such-corpus")
    assert plan.layers == {} and plan.achieved["decoder_ratio"] == 0.0
    assert (tmp_path / "p" / "config.json").is_file()


# --- dependencies that matter for safety ------------------------------------------------------------


def test_dependency_floors_and_no_remote_code_in_data_loads():
    pyproject = (REPO / "pyproject.toml").read_text()
    floor = {name: spec for name, spec in re.findall(r'^\s+"([a-z][a-z0-9_-]*)([^"]*)",', pyproject, re.M)}
    torch_floor = re.search(r">=(\d+)\.(\d+)", floor["torch"])
    assert tuple(map(int, torch_floor.groups())) >= (2, 10), (
        "GHSA-63cw-57p8-fm3p: weights_only bypass before 2.10"
    )
    datasets_floor = re.search(r">=(\d+)", floor["datasets"])
    assert int(datasets_floor.group(1)) >= 4, "datasets 4 runs no loading scripts"
    for source in (REPO / "src" / "prunebench").rglob("*.py"):
        for call in re.findall(r"load_dataset\([^)]*\)", source.read_text()):
            assert "trust_remote_code" not in call, f"{source}: {call}"


def test_struct_of_a_safetensors_header_is_what_the_check_reads(tmp_path):
    """A header declaring more data than the file holds is refused, whatever its tensors."""
    from prunebench.files import safetensors_header

    header = b'{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(
        PrunebenchError,
        match=r"x\.safetensors is truncated: its header declares 16 bytes of tensor data, the file holds 8",
    ):
        safetensors_header(path)
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    assert safetensors_header(path)["x"]["shape"] == [4]
