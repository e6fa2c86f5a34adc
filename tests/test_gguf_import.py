"""Importing a GGUF file: the imported checkpoint equals the source model, provenance, bad inputs."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import gguf
import pytest
import torch
from gguf_fixtures import write_gguf

from prunebench.cli import main
from prunebench.errors import PrunebenchError
from prunebench.models import load_pretrained
from prunebench.models.gguf_import import PROVENANCE_FILE, import_gguf, packaged_file

TINY = Path(__file__).parent / "data" / "tiny-model"
TEXT = "It is a truth universally acknowledged, that a single man in possession of a good fortune"


@pytest.fixture(scope="module")
def source():
    return load_pretrained(TINY)


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory, source):
    return write_gguf(source[0], TINY / "tokenizer.json", tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture(scope="module")
def imported(tmp_path_factory, gguf_file):
    out = tmp_path_factory.mktemp("imported") / "model"
    return out, import_gguf(gguf_file, out)


def test_imported_model_has_the_source_logits_and_tokens(source, imported):
    model, tokenizer = source
    out, _ = imported
    got_model, got_tokenizer = load_pretrained(out)
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    assert got_tokenizer(TEXT, return_tensors="pt").input_ids.tolist() == ids.tolist()
    with torch.no_grad():
        assert torch.equal(got_model(ids).logits, model(ids).logits)
    assert got_model.config.tie_word_embeddings
    assert not hasattr(got_model.config, "quantization_config")


def test_provenance_names_the_file_its_hash_and_the_conversion(gguf_file, imported):
    out, provenance = imported
    assert json.loads((out / PROVENANCE_FILE).read_text()) == provenance
    assert provenance["source"]["sha256"] == hashlib.sha256(gguf_file.read_bytes()).hexdigest()
    assert provenance["source"]["size_bytes"] == gguf_file.stat().st_size
    assert provenance["gguf"]["architecture"] == "llama"
    assert provenance["gguf"]["tensor_types"] == {"F32": len(gguf.GGUFReader(gguf_file).tensors)}
    assert provenance["dequantized_to"] == "float32"
    assert provenance["license"] == "apache-2.0"
    assert set(provenance["versions"]) == {"prunebench", "gguf", "transformers", "torch"}


def test_a_packaged_file_is_found_in_its_distribution_and_recorded(tmp_path, gguf_file, monkeypatch):
    site = tmp_path / "site"
    (site / "tinypkg").mkdir(parents=True)
    (site / "tinypkg" / "tiny.gguf").write_bytes(gguf_file.read_bytes())
    info = site / "tinypkg-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.3\nLicense: MIT\n")
    (info / "RECORD").write_text("tinypkg/tiny.gguf,,\ntinypkg-0.3.dist-info/METADATA,,\n")
    monkeypatch.syspath_prepend(str(site))
    assert packaged_file("tinypkg", "tiny.gguf") == (site / "tinypkg" / "tiny.gguf").resolve()
    provenance = import_gguf("tiny.gguf", tmp_path / "out", package="tinypkg")
    assert provenance["source"]["package"] == {
        "name": "tinypkg",
        "version": "0.3",
        "license": "MIT",
        "file": "tiny.gguf",
    }
    with pytest.raises(PrunebenchError, match=r"tinypkg 0\.3 has no file other\.gguf"):
        packaged_file("tinypkg", "other.gguf")
    with pytest.raises(PrunebenchError, match="package no-such-package is not installed"):
        packaged_file("no-such-package", "x.gguf")


def _truncated(path: Path, tmp: Path) -> Path:
    data = path.read_bytes()
    (tmp / "truncated.gguf").write_bytes(data[: len(data) - 1000])
    return tmp / "truncated.gguf"


def _corrupt(path: Path, tmp: Path) -> Path:
    (tmp / "corrupt.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 4)
    return tmp / "corrupt.gguf"


def _not_gguf(path: Path, tmp: Path) -> Path:
    (tmp / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    return tmp / "model.safetensors"


def _gpt2(path: Path, tmp: Path, source) -> Path:
    return write_gguf(source[0], TINY / "tokenizer.json", tmp / "gpt2.gguf", architecture="gpt2")


def _q8_1(path: Path, tmp: Path, source) -> Path:
    return write_gguf(
        source[0], TINY / "tokenizer.json", tmp / "q81.gguf", tensor_type=gguf.GGMLQuantizationType.Q8_1
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_truncated, r"truncated\.gguf is not a readable GGUF file \(truncated or corrupt\?\)"),
        (_corrupt, r"corrupt\.gguf is not a readable GGUF file"),
        (_not_gguf, r"model\.safetensors is not a readable GGUF file"),
        (_gpt2, r"GGUF architecture 'gpt2' is not supported; supported: llama, qwen2"),
        (_q8_1, r"tensor blk\.0\.attn_q\.weight has quantization type Q8_1, which the installed gguf"),
    ],
)
def test_bad_files_are_refused_in_one_line_with_nothing_written(
    tmp_path, gguf_file, source, make, message, capsys
):
    args = (
        (gguf_file, tmp_path) if make in (_truncated, _corrupt, _not_gguf) else (gguf_file, tmp_path, source)
    )
    bad = make(*args)
    out = tmp_path / "out"
    assert main(["import-gguf", "--gguf", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("prunebench: error: ")
    assert re.search(message, err)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_existing_output_or_a_missing_file_is_refused(tmp_path, gguf_file):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(PrunebenchError, match=r"output directory .*out exists"):
        import_gguf(gguf_file, tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    with pytest.raises(PrunebenchError, match=r"GGUF file not found: .*missing\.gguf"):
        import_gguf(tmp_path / "missing.gguf", tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_the_cli_imports_and_reports(tmp_path, gguf_file, capsys):
    assert main(["import-gguf", "--gguf", str(gguf_file), "--out", str(tmp_path / "m")]) == 0
    assert "imported" in capsys.readouterr().out
    assert (tmp_path / "m" / "model.safetensors").is_file()
