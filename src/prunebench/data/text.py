"""Text sources: local files and directories, and the standard Hub data sets used by the papers."""

from __future__ import annotations

from pathlib import Path

from prunebench.data.hub import HUB_SOURCES, hub_text
from prunebench.errors import PrunebenchError
from prunebench.files import DEFAULT_ENCODING, check_decodes, read_text_file

SPLITS = ("train", "validation", "test")


def _local_split(directory: Path, split: str) -> Path:
    for name in (f"{split}.txt", f"{split}.txt.gz"):
        if (directory / name).is_file():
            return directory / name
    raise PrunebenchError(f"{directory} has no {split}.txt or {split}.txt.gz")


def local_text_file(source: str, split: str = "train") -> Path | None:
    """The local file that holds ``split`` of ``source``, or ``None`` when ``source`` names a Hub data set.

    ``source`` is a file (.txt/.txt.gz, its own text for every split), a directory of splits, or one
    of ``HUB_SOURCES``. An unknown split, a directory without the split, and a name that is neither a
    local path nor a Hub data set are ``PrunebenchError``s (checked without reading any text).
    """
    if split not in SPLITS:
        raise PrunebenchError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    path = Path(source)
    if path.is_dir():
        return _local_split(path, split)
    if path.is_file():
        return path
    if source in HUB_SOURCES:
        return None
    raise PrunebenchError(
        f"text source {source!r} is neither a local file or directory nor one of {', '.join(HUB_SOURCES)}"
    )


def check_text_source(source: str, split: str = "train", encoding: str = DEFAULT_ENCODING) -> None:
    """Before any expensive work: a local ``source`` exists, holds ``split`` and decodes as ``encoding``
    (streamed, not kept); a Hub data set is not contacted. Each problem is a ``PrunebenchError``."""
    path = local_text_file(source, split)
    if path is not None:
        check_decodes(path, encoding)


def load_text(source: str, split: str = "train", encoding: str = DEFAULT_ENCODING) -> str:
    """The text of ``split`` from ``source``: a file (.txt/.txt.gz), a directory of splits, or a Hub data set.

    Hub names: ``wikitext2``, ``c4``, ``ptb``, ``alpaca``, ``bookcorpus``, ``pg19``
    (:data:`prunebench.data.hub.HUB_SOURCES`; read at the study's pinned revision, if any). An unknown
    name, a missing file, a local file that ``encoding`` cannot decode (named with the byte offset), a
    Hub data set that cannot be read, or empty text is a ``PrunebenchError``.
    """
    path = local_text_file(source, split)
    text = hub_text(source, split) if path is None else read_text_file(path, encoding)
    if not text.strip():
        raise PrunebenchError(f"text source {source!r} ({split}) is empty")
    return text
