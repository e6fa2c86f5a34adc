"""The demo corpus: Jane Austen's novels from Debian's ``r-cran-janeaustenr``, split like WikiText-2.

Train = five novels; validation and test = the first and second half of *Persuasion*, a novel never
seen in training. Each split is plain text, one paragraph per line, novels separated by a blank line.
"""

from __future__ import annotations

import gzip
import re
import warnings
import zlib
from pathlib import Path

from prunebench.errors import PrunebenchError

PACKAGE = "r-cran-janeaustenr"
RDATA = "usr/lib/R/site-library/janeaustenr/data/Rdata"
TRAIN_NOVELS = ("emma", "mansfieldpark", "northangerabbey", "prideprejudice", "sensesensibility")
HELD_OUT_NOVEL = "persuasion"
SPLITS = ("train", "validation", "test")


def _rdata():
    try:
        import rdata
    except ImportError as exc:
        raise PrunebenchError(
            "the PyPI package 'rdata' is needed to read the Austen package: "
            "pip install 'prunebench[demo-build]'"
        ) from exc
    return rdata


def _parse_r(blob: bytes, what: str):
    rdata = _rdata()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata warns that a bare serialisation stream is "assumed RDS"
        try:
            return rdata.conversion.convert(rdata.parser.parse_data(blob))
        except Exception as exc:  # rdata raises plain exceptions of several kinds on bad input
            raise PrunebenchError(f"{PACKAGE}: cannot parse {what}: {exc}") from exc


def read_austen(rdx: bytes, rdb: bytes) -> dict[str, list[str]]:
    """Decode R's lazy-load database (``Rdata.rdx`` index + ``Rdata.rdb`` blobs) into novel → lines.

    Each ``.rdb`` entry is a 4-byte length header followed by a zlib stream of an R character vector.
    """
    try:
        index = _parse_r(gzip.decompress(rdx), "Rdata.rdx")
    except (OSError, EOFError) as exc:
        raise PrunebenchError(f"{PACKAGE}: Rdata.rdx is not gzip data: {exc}") from exc
    variables = index.get("variables") if isinstance(index, dict) else None
    expected = {*TRAIN_NOVELS, HELD_OUT_NOVEL}
    if not isinstance(variables, dict) or not expected <= {str(k) for k in variables}:
        raise PrunebenchError(f"{PACKAGE}: Rdata.rdx does not index the six novels {sorted(expected)}")
    novels: dict[str, list[str]] = {}
    for name in sorted(expected):
        offset, length = (int(v) for v in variables[name])
        try:
            blob = zlib.decompress(rdb[offset + 4 : offset + length])
        except zlib.error as exc:
            raise PrunebenchError(f"{PACKAGE}: entry {name!r} of Rdata.rdb is corrupt: {exc}") from exc
        lines = [str(x) for x in _parse_r(blob, f"entry {name!r}")]
        if len(lines) < 100:
            raise PrunebenchError(f"{PACKAGE}: entry {name!r} has only {len(lines)} lines")
        novels[name] = lines
    return novels


def paragraphs(lines: list[str]) -> list[str]:
    """Re-flow 70-column lines into paragraphs (split on blank lines), dropping ``_italic_`` markers."""
    out: list[str] = []
    current: list[str] = []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            text = re.sub(r"_([^_]+)_", r"\1", " ".join(current)).replace("_", "")
            out.append(re.sub(r"\s+", " ", text).strip())
            current = []
    return out


def split_half(paras: list[str]) -> tuple[list[str], list[str]]:
    """Cut a list of paragraphs at the paragraph boundary closest to half of the characters."""
    total = sum(len(p) for p in paras)
    running = 0
    for i, p in enumerate(paras):
        if running + len(p) / 2 >= total / 2:
            return paras[:i], paras[i:]
        running += len(p)
    return paras, []


def build_splits(novels: dict[str, list[str]]) -> dict[str, str]:
    """Return the three splits as text: one paragraph per line, novels separated by a blank line."""
    train = "\n\n".join("\n".join(paragraphs(novels[n])) for n in TRAIN_NOVELS)
    validation, test = split_half(paragraphs(novels[HELD_OUT_NOVEL]))
    splits = {"train": train, "validation": "\n".join(validation), "test": "\n".join(test)}
    return {k: v + "\n" for k, v in splits.items()}


def split_paths(corpus_dir: str | Path) -> dict[str, Path]:
    """Where each split lives: ``{corpus_dir}/{split}.txt.gz``."""
    return {s: Path(corpus_dir) / f"{s}.txt.gz" for s in SPLITS}


def load_split(corpus_dir: str | Path, split: str) -> str:
    """Read one shipped split as text; a clear error when it is absent."""
    from prunebench.demo.atomic import read_text

    if split not in SPLITS:
        raise PrunebenchError(f"unknown demo corpus split {split!r}; choose one of {', '.join(SPLITS)}")
    path = split_paths(corpus_dir)[split]
    if not path.is_file():
        raise PrunebenchError(f"demo corpus split not found: {path} (rebuild with build_demo_corpus.py)")
    return read_text(path)


def build_corpus(deb_dir: str | Path, out_dir: str | Path, download: bool = True) -> dict[str, Path]:
    """Build the three splits from the Debian package and write them (gzip, atomically) to ``out_dir``.

    Also writes ``SOURCE.json`` (package file, SHA-256, split sizes) so a rebuild can be checked.
    """
    import json

    from prunebench.demo import debian
    from prunebench.demo.atomic import write_text

    deb = debian.find_or_download(PACKAGE, deb_dir, download=download)
    files = debian.read_members(deb, [f"{RDATA}.rdx", f"{RDATA}.rdb"])
    splits = build_splits(read_austen(files[f"{RDATA}.rdx"], files[f"{RDATA}.rdb"]))
    paths = split_paths(out_dir)
    for split, text in splits.items():
        write_text(paths[split], text)
    source = {
        "package": deb.name,
        "sha256": debian.sha256(deb),
        "train_novels": list(TRAIN_NOVELS),
        "held_out_novel": HELD_OUT_NOVEL,
        "characters": {s: len(t) for s, t in splits.items()},
        "paragraphs": {s: t.count("\n") - t.count("\n\n") for s, t in splits.items()},
    }
    write_text(Path(out_dir) / "SOURCE.json", json.dumps(source, indent=2) + "\n")
    return paths
