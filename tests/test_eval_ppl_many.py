"""`prunebench eval ppl` with several texts and window lengths: the model is loaded once and each
text x window gets its own result, equal to that of a run on that pair alone."""

from __future__ import annotations

import gzip
import json

import pytest

from prunebench.cli import main

MODEL = "tests/data/tiny-model"
CORPUS = "resources/demo/corpus"


def _read(path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def test_every_text_and_window_with_one_model_load(tmp_path, monkeypatch):
    text_file = tmp_path / "other.txt"
    with gzip.open(f"{CORPUS}/validation.txt.gz", "rt", encoding="utf-8") as fh:
        text_file.write_text(fh.read()[:20000], encoding="utf-8")
    loads = []
    import prunebench.models

    original = prunebench.models.load_pretrained

    def counting(*args, **kwargs):
        loads.append(args[0])
        return original(*args, **kwargs)

    # eval ppl imports load_pretrained from prunebench.models when it runs (a lazy import)
    monkeypatch.setattr(prunebench.models, "load_pretrained", counting)
    outs = [tmp_path / f"{name}_{seqlen}.json" for name in ("demo", "other") for seqlen in (16, 32)]
    argv = ["eval", "ppl", "--model", MODEL, "--text", CORPUS, "--text", str(text_file)]
    argv += ["--seqlen", "16", "--seqlen", "32", "--max-windows", "3"]
    assert main([*argv, *(f"--out={o}" for o in outs)]) == 0
    assert loads == [MODEL]
    for out, (text, seqlen) in zip(
        outs,
        [(CORPUS, 16), (CORPUS, 32), (str(text_file), 16), (str(text_file), 32)],
        strict=True,
    ):
        alone = tmp_path / f"alone-{out.name}"
        single = [
            "eval",
            "ppl",
            "--model",
            MODEL,
            "--text",
            text,
            "--seqlen",
            str(seqlen),
            "--max-windows",
            "3",
        ]
        assert main([*single, "--out", str(alone)]) == 0
        result, reference = _read(out), _read(alone)
        assert result["seqlen"] == seqlen and result["text"] == text
        assert result["ppl"] == pytest.approx(reference["ppl"], rel=1e-6)


def test_one_out_per_pair_is_required(tmp_path, capsys):
    argv = ["eval", "ppl", "--model", MODEL, "--text", CORPUS, "--seqlen", "16", "--seqlen", "32"]
    assert main([*argv, "--out", str(tmp_path / "a.json")]) == 2
    assert (
        "prunebench: error: 1 --out for 1 --text x 2 --seqlen = 2 results; give one --out per pair"
        in capsys.readouterr().err
    )


def test_each_text_is_read_from_its_own_split(tmp_path):
    """The same source twice, at two splits (as a study's ``splits: {ptb: validation}`` gives): each result
    equals a run on that split alone and records it."""
    outs = [tmp_path / "validation.json", tmp_path / "test.json"]
    argv = ["eval", "ppl", "--model", MODEL, "--seqlen", "16", "--max-windows", "3"]
    both = ["--text", CORPUS, "--split", "validation", "--text", CORPUS, "--split", "test"]
    assert main([*argv, *both, *(f"--out={o}" for o in outs)]) == 0
    for out, split in zip(outs, ("validation", "test"), strict=True):
        alone = tmp_path / f"alone-{split}.json"
        assert main([*argv, "--text", CORPUS, "--split", split, "--out", str(alone)]) == 0
        result = _read(out)
        assert result["split"] == split
        assert result["ppl"] == pytest.approx(_read(alone)["ppl"], rel=1e-6)
    assert _read(outs[0])["ppl"] != _read(outs[1])["ppl"]


def test_one_split_or_one_per_text(tmp_path, capsys):
    argv = ["eval", "ppl", "--model", MODEL, "--seqlen", "16", "--out", str(tmp_path / "a.json")]
    texts = ["--text", CORPUS, "--text", CORPUS, "--text", CORPUS]
    assert main([*argv, *texts, "--split", "test", "--split", "validation"]) == 2
    assert "prunebench: error: 2 --split for 3 --text; give one, or one per --text" in capsys.readouterr().err


def test_a_text_file_records_no_split(tmp_path):
    """A text file is its own text for every split: the result does not claim one."""
    text_file = tmp_path / "t.txt"
    with gzip.open(f"{CORPUS}/test.txt.gz", "rt", encoding="utf-8") as fh:
        text_file.write_text(fh.read()[:20000], encoding="utf-8")
    out = tmp_path / "r.json"
    argv = ["eval", "ppl", "--model", MODEL, "--seqlen", "16", "--max-windows", "2", "--out", str(out)]
    assert main([*argv, "--text", str(text_file), "--split", "validation"]) == 0
    assert _read(out)["split"] is None
