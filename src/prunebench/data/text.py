"""Text sources: local files and directories, and the standard Hub data sets used by the papers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from prunebench.errors import PrunebenchError
from prunebench.files import DEFAULT_ENCODING, check_decodes, read_text_file

SPLITS = ("train", "validation", "test")


def _local_split(directory: Path, split: str) -> Path:
    for name in (f"{split}.txt", f"{split}.txt.gz"):
        if (directory / name).is_file():
            return directory / name
    raise PrunebenchError(f"{directory} has no {split}.txt or {split}.txt.gz")


def _wikitext2(split: str) -> str:
    from datasets import load_dataset

    rows = load_dataset("wikitext", "wikitext-2-raw-v1", split=split)
    return "\n\n".join(rows["text"])


def _ptb(split: str) -> str:
    from datasets import load_dataset

    rows = load_dataset("ptb_text_only", "penn_treebank", split=split)
    return "\n\n".join(rows["sentence"])


def _c4(split: str) -> str:
    """The shards that SparseGPT/Wanda/FLAP use: train shard 0 and validation shard 0 of allenai/c4."""
    from datasets import load_dataset

    shard = {
        "train": "en/c4-train.00000-of-01024.json.gz",
        "validation": "en/c4-validation.00000-of-00008.json.gz",
        "test": "en/c4-validation.00000-of-00008.json.gz",
    }[split]
    rows = load_dataset("allenai/c4", data_files={split: shard}, split=split)
    return "\n\n".join(rows["text"][:5000] if split == "train" else rows["text"][:1100])


def _alpaca(split: str) -> str:
    """Alpaca-cleaned as plain text (instruction, input and output joined), as BlockPruner calibrates."""
    from datasets import load_dataset

    rows = load_dataset("yahma/alpaca-cleaned", split="train")
    return "\n\n".join(
        " ".join(part for part in (r["instruction"], r["input"], r["output"]) if part) for r in rows
    )


def _bookcorpus(split: str) -> str:
    """BookCorpus (Shortened-LLaMA's calibration set); it has only a train split."""
    from datasets import load_dataset

    rows = load_dataset("bookcorpus", split="train[:20000]")
    return "\n".join(rows["text"])


def _pg19(split: str) -> str:
    """PG19 books (ShortGPT's calibration set): the first 20 books of the split."""
    from datasets import load_dataset

    rows = load_dataset(
        "emozilla/pg19",
        split={"train": "train[:20]", "validation": "validation[:20]", "test": "test[:20]"}[split],
    )
    return "\n\n".join(rows["text"])


HUB_SOURCES: dict[str, Callable[[str], str]] = {
    "bookcorpus": _bookcorpus,
    "pg19": _pg19,
    "wikitext2": _wikitext2,
    "ptb": _ptb,
    "c4": _c4,
    "alpaca": _alpaca,
}


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

    Hub names: ``wikitext2``, ``c4``, ``ptb``, ``alpaca``, ``bookcorpus``, ``pg19``. An unknown name, a
    missing file, a local file that ``encoding`` cannot decode (named with the byte offset) or empty
    text is a ``PrunebenchError``.
    """
    path = local_text_file(source, split)
    text = HUB_SOURCES[source](split) if path is None else read_text_file(path, encoding)
    if not text.strip():
        raise PrunebenchError(f"text source {source!r} ({split}) is empty")
    return text
