"""Atomic writes of prunebench.io."""

from __future__ import annotations

import pytest

from prunebench.io import atomic_file, atomic_write_text, read_text


def test_atomic_write_leaves_nothing_on_failure_and_gzip_is_reproducible(tmp_path):
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "out.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    atomic_write_text(tmp_path / "a.txt.gz", "héllo\n")
    first = (tmp_path / "a.txt.gz").read_bytes()
    atomic_write_text(tmp_path / "a.txt.gz", "héllo\n")
    assert (tmp_path / "a.txt.gz").read_bytes() == first and read_text(tmp_path / "a.txt.gz") == "héllo\n"
