"""Write files and directories atomically: to a temporary sibling first, then ``os.replace``."""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` if the block succeeds.

    Works for a file or a directory written at the yielded path. On failure nothing is left behind.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)) / target.name
    try:
        yield tmp
        if target.is_dir() and tmp.is_dir():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_text(target: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text atomically; gzip it (reproducibly, mtime 0) when the name ends in ``.gz``."""
    with atomic_path(target) as tmp:
        if tmp.name.endswith(".gz"):
            with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
                gz.write(text.encode("utf-8"))
        else:
            tmp.write_text(text, encoding="utf-8")


def read_text(path: str | os.PathLike) -> str:
    """Read UTF-8 text, transparently un-gzipping a ``.gz`` file."""
    path = Path(path)
    if path.name.endswith(".gz"):
        with gzip.open(path, "rb") as fh:
            return fh.read().decode("utf-8")
    return path.read_text(encoding="utf-8")


@contextmanager
def updated_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary copy of directory ``target`` (empty if absent); it replaces ``target`` on success."""
    target = Path(target)
    with atomic_path(target) as tmp:
        if target.is_dir():
            shutil.copytree(target, tmp)
        else:
            tmp.mkdir()
        yield tmp
