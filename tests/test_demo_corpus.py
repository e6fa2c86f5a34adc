"""The demo corpus: shipped splits, the re-flow and split logic, Debian package reading, error paths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from deb_helpers import make_deb

from prunebench.demo import corpus, debian
from prunebench.errors import PrunebenchError

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "resources/demo/corpus"
DEBS = ROOT / "resources/demo/.debs"


def split_paragraphs(split: str) -> list[str]:
    return [p for p in corpus.load_split(CORPUS, split).splitlines() if p.strip()]


def test_shipped_splits_are_nonempty_and_disjoint():
    paras = {s: split_paragraphs(s) for s in corpus.SPLITS}
    assert len(paras["train"]) > 5000 and len(paras["validation"]) > 300 and len(paras["test"]) > 300
    # Short lines such as "Chapter 12" or "THE END" may recur; real paragraphs must not.
    long = {s: {p for p in ps if len(p) > 80} for s, ps in paras.items()}
    assert not long["train"] & long["validation"]
    assert not long["train"] & long["test"]
    assert not long["validation"] & long["test"]
    # Validation then test is Persuasion in order: the test half starts where validation stops.
    assert paras["validation"][0] == "Persuasion"
    assert abs(sum(map(len, paras["validation"])) - sum(map(len, paras["test"]))) < 0.02 * sum(
        map(len, paras["test"])
    )


def test_paragraphs_reflow_and_drop_italic_markers():
    lines = ["", "It was _very_ odd,", "  said   she.", "", "", "CHAPTER II", ""]
    assert corpus.paragraphs(lines) == ["It was very odd, said she.", "CHAPTER II"]


def test_split_half_cuts_at_a_paragraph_boundary_near_the_middle():
    paras = ["a" * 10, "b" * 10, "c" * 30, "d" * 10]
    first, second = corpus.split_half(paras)
    assert first + second == paras
    assert first == ["a" * 10, "b" * 10]


def test_load_split_errors_are_clear(tmp_path):
    with pytest.raises(PrunebenchError, match="unknown demo corpus split"):
        corpus.load_split(CORPUS, "dev")
    with pytest.raises(PrunebenchError, match="not found"):
        corpus.load_split(tmp_path, "train")


def test_read_members_reads_a_deb_and_names_missing_files(tmp_path):
    deb = make_deb(tmp_path / "pkg_1.0_all.deb", {"usr/share/x/a.txt": b"hello"})
    assert debian.read_members(deb, ["usr/share/x/a.txt"]) == {"usr/share/x/a.txt": b"hello"}
    with pytest.raises(PrunebenchError, match=r"unexpected layout, missing usr/share/x/b\.txt"):
        debian.read_members(deb, ["usr/share/x/a.txt", "usr/share/x/b.txt"])
    (tmp_path / "bad_1.0_all.deb").write_bytes(b"not a deb")
    with pytest.raises(PrunebenchError, match="not a Debian package"):
        debian.read_members(tmp_path / "bad_1.0_all.deb", ["a"])


def test_find_or_download_without_download_names_the_package(tmp_path):
    with pytest.raises(PrunebenchError, match="apt-get download r-cran-janeaustenr"):
        debian.find_or_download(corpus.PACKAGE, tmp_path, download=False)
    deb = make_deb(tmp_path / "r-cran-janeaustenr_9_all.deb", {})
    assert debian.find_or_download(corpus.PACKAGE, tmp_path, download=False) == deb


def test_package_with_wrong_layout_fails_cleanly_and_writes_nothing(tmp_path):
    debs = tmp_path / "debs"
    debs.mkdir()
    make_deb(debs / "r-cran-janeaustenr_1_all.deb", {"usr/share/doc/readme": b"x"})
    out = tmp_path / "out"
    with pytest.raises(PrunebenchError, match="unexpected layout"):
        corpus.build_corpus(debs, out, download=False)
    assert not out.exists() or not any(out.iterdir())


def test_corrupt_rdata_index_is_a_clear_error():
    pytest.importorskip("rdata")
    with pytest.raises(PrunebenchError, match=r"Rdata\.rdx"):
        corpus.read_austen(b"not gzip", b"")


def test_missing_rdata_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "rdata", None)
    with pytest.raises(PrunebenchError, match=r"pip install 'prunebench\[demo-build\]'"):
        corpus.read_austen(b"", b"")


def test_build_script_reports_a_missing_package_in_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "workflow/scripts/build_demo_corpus.py",
            "--deb-dir",
            str(tmp_path),
            "--no-download",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: r-cran-janeaustenr: no r-cran-janeaustenr_*.deb")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(not any(DEBS.glob("r-cran-janeaustenr_*.deb")), reason="Debian package not downloaded")
def test_rebuild_from_the_debian_package_reproduces_the_shipped_splits(tmp_path):
    pytest.importorskip("rdata")
    paths = corpus.build_corpus(DEBS, tmp_path, download=False)
    for split, path in paths.items():
        assert path.read_bytes() == (CORPUS / f"{split}.txt.gz").read_bytes(), split
