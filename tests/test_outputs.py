"""Output options: an existing path is replaced only when it is an earlier output of the same kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunebench.cli import main
from prunebench.errors import PrunebenchError
from prunebench.io import OutputKind, atomic_directory, check_output, updated_directory
from prunebench.recovery.run import RECOVERED_MODEL

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = REPO / "tests" / "data" / "tiny-model"
CORPUS = REPO / "resources" / "demo" / "corpus"
CHECKPOINT = OutputKind("checkpoint", ("config.json", "plan.json"))
RESULT = OutputKind("result", ("ppl", "tokens"), directory=False)


def _foreign(path: Path) -> Path:
    """A directory of someone's own files, which no output may replace."""
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("mine\n")
    return path


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_absent_empty_or_same_kind_is_accepted(tmp_path):
    assert check_output(tmp_path / "new" / "deeper", CHECKPOINT) == tmp_path / "new" / "deeper"
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", CHECKPOINT)
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    for name in ("config.json", "plan.json", "model.safetensors"):
        (earlier / name).write_text("{}")
    check_output(earlier, CHECKPOINT)
    (tmp_path / "r.json").write_text(json.dumps({"ppl": 3.0, "tokens": 10, "seqlen": 8}))
    check_output(tmp_path / "r.json", RESULT)


@pytest.mark.parametrize(
    ("make", "kind", "message"),
    [
        (
            lambda p: _foreign(p),
            CHECKPOINT,
            r"exists and is not a checkpoint \(entries config\.json, plan\.json\)",
        ),
        (lambda p: (_foreign(p) / "config.json").write_text("{}"), CHECKPOINT, "is not a checkpoint"),
        (lambda p: p.write_text("mine\n"), CHECKPOINT, "it is a file, not a checkpoint"),
        (lambda p: _foreign(p), RESULT, "it is a directory, not a result"),
        (lambda p: p.write_text("mine\n"), RESULT, r"exists and is not a result \(keys ppl, tokens\)"),
        (lambda p: p.write_text('{"ppl": 3.0}'), RESULT, "is not a result"),
        (lambda p: p.write_text("[1, 2]"), RESULT, "is not a result"),
    ],
)
def test_anything_else_is_refused_and_kept(tmp_path, make, kind, message):
    path = tmp_path / "out"
    make(path)
    before = path.read_bytes() if path.is_file() else _snapshot(path)
    with pytest.raises(PrunebenchError, match=message):
        check_output(path, kind)
    with pytest.raises(PrunebenchError, match=message), atomic_directory(path, kind) as tmp:
        (tmp / "config.json").write_text("{}")
    assert (path.read_bytes() if path.is_file() else _snapshot(path)) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging directory left behind


def test_working_directory_and_its_parents_are_never_replaced(tmp_path, monkeypatch):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    for name in ("config.json", "plan.json"):  # even an output of the right kind
        (work / name).write_text("{}")
    monkeypatch.chdir(work)
    for path in (".", "", "..", "../..", str(work), "../b", "/"):
        with pytest.raises(PrunebenchError, match="working directory or one of its parents"):
            check_output(path, CHECKPOINT)
        with pytest.raises(PrunebenchError, match="working directory"), updated_directory(path):
            pass
    assert sorted(p.name for p in work.iterdir()) == ["config.json", "plan.json"]


def test_symbolic_link_and_path_under_a_file_are_refused(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(PrunebenchError, match="symbolic link"):
        check_output(tmp_path / "link", CHECKPOINT)
    (tmp_path / "file").write_text("mine\n")
    with pytest.raises(PrunebenchError, match=r"file is not a directory"):
        check_output(tmp_path / "file" / "out", CHECKPOINT)


def test_same_kind_is_replaced_whole(tmp_path):
    out = tmp_path / "out"
    with atomic_directory(out, CHECKPOINT) as tmp:
        (tmp / "config.json").write_text("1")
        (tmp / "plan.json").write_text("1")
        (tmp / "old-only.txt").write_text("1")
    with atomic_directory(out, CHECKPOINT) as tmp:
        (tmp / "config.json").write_text("2")
        (tmp / "plan.json").write_text("2")
    assert _snapshot(out) == {"config.json": b"2", "plan.json": b"2"}


def test_interrupted_recovery_leaves_a_replaceable_directory(tmp_path):
    out = tmp_path / "out"
    (out / "resume").mkdir(parents=True)
    (out / "resume" / "resume.pt").write_bytes(b"state")
    check_output(out, RECOVERED_MODEL)
    (out / "notes.txt").write_text("mine\n")
    with pytest.raises(PrunebenchError, match="is not a recovered model"):
        check_output(out, RECOVERED_MODEL)


# Every command with an --out, given someone's directory or file. The model path does not exist, so the
# refusal must come before the model is loaded (else the message would be "model not found").
COMMANDS = [
    ["score", "--model", "{tmp}/nowhere", "--method", "magnitude-sp"],
    ["prune", "--model", "{tmp}/nowhere", "--method", "magnitude-sp", "--ratio", "0.2"],
    ["apply", "--model", "{tmp}/nowhere", "--plan", "{tmp}/plan.json"],
    ["recover", "--model", "{tmp}/nowhere", "--variant", "lora", "--data", str(CORPUS), "--steps", "1"],
    ["eval", "ppl", "--model", "{tmp}/nowhere", "--text", str(CORPUS), "--seqlen", "8"],
    ["eval", "zeroshot", "--model", "{tmp}/nowhere", "--tasks", "demo_cloze", "--offline",
     "--include-path", str(REPO / "resources" / "demo" / "tasks")],
    ["eval", "latency", "--model", "{tmp}/nowhere"],
]  # fmt: skip


@pytest.mark.parametrize("target", ["directory", "file"])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(w for w in c[:2] if w != "--model"))
def test_every_output_option_refuses_what_is_there_before_loading(tmp_path, command, target, capsys):
    (tmp_path / "plan.json").write_text(
        json.dumps({"format": "prunebench-plan/1", "base_model": "m", "method": "manual", "params": {},
                    "target_ratio": 0.1, "layers": {"0": {"mlp_channels": [0]}}})
    )  # fmt: skip
    out = _foreign(tmp_path / "mine") if target == "directory" else tmp_path / "mine.txt"
    if target == "file":
        out.write_text("mine\n")
    before = _snapshot(out) if out.is_dir() else out.read_bytes()
    argv = [a.format(tmp=tmp_path) for a in command] + ["--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"prunebench: error: refusing to replace {out}: it ")
    assert (_snapshot(out) if out.is_dir() else out.read_bytes()) == before


def test_out_of_the_working_directory_is_refused(tmp_path, monkeypatch, capsys):
    _foreign(tmp_path / "work")
    monkeypatch.chdir(tmp_path / "work")
    for out in (".", ".."):
        argv = [
            "prune",
            "--model",
            str(TINY_MODEL),
            "--method",
            "magnitude-sp",
            "--ratio",
            "0.2",
            "--out",
            out,
        ]
        assert main(argv) == 2
        assert "working directory or one of its parents" in capsys.readouterr().err
    assert _snapshot(tmp_path / "work") == {"notes.txt": b"mine\n"}


def test_rerun_replaces_an_output_of_the_same_kind(tmp_path, capsys):
    out, result = tmp_path / "pruned", tmp_path / "ppl.json"
    for ratio in ("0.2", "0.3"):
        argv = ["prune", "--model", str(TINY_MODEL), "--method", "magnitude-sp", "--ratio", ratio]
        assert main([*argv, "--out", str(out)]) == 0
    assert json.loads((out / "plan.json").read_text())["target_ratio"] == 0.3
    argv = ["eval", "ppl", "--model", str(out), "--text", str(CORPUS), "--seqlen", "16", "--max-windows", "2"]
    assert main([*argv, "--out", str(result)]) == 0
    first = json.loads(result.read_text())
    assert main([*argv, "--out", str(result)]) == 0
    assert json.loads(result.read_text())["ppl"] == first["ppl"]
    capsys.readouterr()
