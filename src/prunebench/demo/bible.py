"""A second public-domain evaluation text: the World English Bible from Debian's ``sword-text-web``.

The package holds a SWORD ``zText`` module (OSIS markup, NRSVA versification) that is read here in
pure Python, without the SWORD library. Per testament (``ot``, ``nt``) there are three files:

- ``.bzz``: zlib-compressed blocks of OSIS text, concatenated;
- ``.bzs``: one 12-byte little-endian record per block: offset in ``.bzz``, compressed size,
  uncompressed size;
- ``.bzv``: one 10-byte record per index slot: block number, offset in the uncompressed block, size.

Slot 0 is the module heading, slot 1 the testament heading, then every book has a heading slot and
every chapter a heading slot followed by one slot per verse, so verse ``v`` of a chapter lives ``v``
slots after the slot that opens the chapter (SWORD's ``VersificationMgr`` offsets). Books and chapters
are recognised from osis2mod's milestone tags (``<div type="book" sID=..>``, ``<chapter sID=..>``).

Only scripture text is kept: footnotes and cross references (``<note>``), editorial titles, book
introductions, the preface and the glossary are dropped; canonical titles (psalm superscriptions) and
speaker labels are kept as paragraphs of their own. Paragraph breaks follow the OSIS paragraph
(``x-p``), stanza (``lg``) and list-item marks; lines of poetry within a stanza are joined by a space.
"""

from __future__ import annotations

import html
import json
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from prunebench.errors import PrunebenchError

PACKAGE = "sword-text-web"
MODULE = "engWEB2015eb"
CONF = f"usr/share/sword/mods.d/{MODULE}.conf"
TESTAMENTS = ("ot", "nt")
# Whole books, New Testament narrative: validation = Mark and Luke, test = John and Acts (contiguous in
# the canon; John shares little wording with the synoptic gospels, so the test text does not repeat the
# validation text). About 200-220k characters each, like the demo corpus's held-out halves.
SPLIT_BOOKS: dict[str, tuple[str, ...]] = {"validation": ("Mark", "Luke"), "test": ("John", "Acts")}
SPLITS = tuple(SPLIT_BOOKS)

_TOKEN = re.compile(r"<[^>]*>|[^<]+")
_TAG = re.compile(r"<\s*(/?)\s*([A-Za-z][\w:]*)((?:\s+[\w:]+\s*=\s*\"[^\"]*\")*)\s*(/?)\s*>")
_ATTR = re.compile(r"([\w:]+)\s*=\s*\"([^\"]*)\"")
_GLUED = re.compile(r"[\w“‘(\[]")  # text that needs a space before it after a note or a quotation
_BREAK = "\x1e"  # paragraph break inside a slot's buffer (ASCII record separator; never kept as text)
_SKIPPED_DIVS = {"front", "glossary", "introduction", "preface", "colophon"}


@dataclass(frozen=True)
class Verse:
    """One verse as plain text.

    ``verse`` 0 is text in a chapter's heading slot (before verse 1). ``text`` holds ``"\\n"`` where a
    paragraph break falls inside the verse; ``new_paragraph`` says whether a paragraph starts with it.
    """

    book: str
    chapter: int
    verse: int
    text: str
    new_paragraph: bool


@dataclass
class Book:
    """A book of the module: OSIS id (e.g. ``"Matt"``), long title, verses in order."""

    osis_id: str
    title: str
    verses: list[Verse] = field(default_factory=list)

    def paragraphs(self) -> list[str]:
        """The title, then the text with one paragraph per item (verses joined by a space)."""
        out = [self.title]
        current: list[str] = []
        for verse in self.verses:
            first, *rest = verse.text.split("\n")
            if verse.new_paragraph and current:
                out.append(" ".join(current))
                current = []
            current.append(first)
            for part in rest:
                out.append(" ".join(current))
                current = [part]
        if current:
            out.append(" ".join(current))
        return out


def read_conf(text: str) -> dict[str, str]:
    """Parse a SWORD module ``.conf`` (``Key=Value`` lines; the first value of a repeated key wins)."""
    conf: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            conf.setdefault(key.strip(), value.strip())
    return conf


def check_conf(conf: dict[str, str]) -> str:
    """Return the module's data folder (inside the package) after checking it is a zlib OSIS zText."""
    expected = {"ModDrv": "zText", "CompressType": "ZIP", "SourceType": "OSIS", "Encoding": "UTF-8"}
    for key, value in expected.items():
        if conf.get(key, "").lower() != value.lower():
            raise PrunebenchError(
                f"{PACKAGE}: {CONF} has {key}={conf.get(key, '(missing)')}, expected {value}"
            )
    data_path = conf.get("DataPath", "").strip("./").rstrip("/")
    if not data_path:
        raise PrunebenchError(f"{PACKAGE}: {CONF} has no DataPath")
    return f"usr/share/sword/{data_path}"


def read_ztext(bzs: bytes, bzz: bytes, bzv: bytes, name: str) -> list[str]:
    """Decode one testament of a zText module into the OSIS text of every index slot ("" when empty).

    ``name`` (e.g. ``"nt"``) is used in error messages. A truncated index, a corrupt block or a slot
    pointing outside its block is a :class:`PrunebenchError`.
    """
    if len(bzs) % 12 or len(bzv) % 10:
        raise PrunebenchError(f"{PACKAGE}: {name}.bzs or {name}.bzv is truncated (not whole records)")
    blocks: list[bytes] = []
    for number, (offset, size, usize) in enumerate(struct.iter_unpack("<III", bzs)):
        if offset + size > len(bzz):
            raise PrunebenchError(f"{PACKAGE}: block {number} of {name}.bzz lies past the end of the file")
        try:
            block = zlib.decompress(bzz[offset : offset + size]) if size else b""
        except zlib.error as exc:
            raise PrunebenchError(f"{PACKAGE}: block {number} of {name}.bzz is corrupt: {exc}") from exc
        if len(block) != usize:
            raise PrunebenchError(
                f"{PACKAGE}: block {number} of {name}.bzz is {len(block)} bytes, its index says {usize}"
            )
        blocks.append(block)
    entries: list[str] = []
    for slot, (number, offset, size) in enumerate(struct.iter_unpack("<IIH", bzv)):
        if not size:
            entries.append("")
            continue
        if number >= len(blocks) or offset + size > len(blocks[number]):
            raise PrunebenchError(f"{PACKAGE}: slot {slot} of {name}.bzv points outside block {number}")
        try:
            entries.append(blocks[number][offset : offset + size].decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise PrunebenchError(f"{PACKAGE}: slot {slot} of {name}.bzv is not UTF-8: {exc}") from exc
    return entries


class _Reader:
    """State of one pass over a testament's slots: where we are and what is being skipped."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.books: list[Book] = []
        self.book: Book | None = None
        self.chapter = 0
        self.chapter_slot = -1
        self.skipped: set[str] = set()  # sIDs of open preface/introduction/glossary divs
        self.notes = 0  # depth of open <note> elements
        self.space_missing = False  # a note or a quotation just ended: osis2mod may have eaten a space
        self.title: str | None = None  # inside a <title>: "keep" (canonical) or "drop" (editorial)
        self.pending_break = False
        self.buffer: list[str] = []
        self.slot = -1
        self.starts_paragraph = False

    def error(self, message: str) -> PrunebenchError:
        return PrunebenchError(f"{PACKAGE}: slot {self.slot} of {self.name}: {message}")

    def keeping(self) -> bool:
        return (
            self.book is not None
            and self.chapter > 0
            and not self.skipped
            and not self.notes
            and self.title != "drop"
        )

    def text(self, chunk: str) -> None:
        if not self.keeping():
            return
        chunk = chunk.replace(_BREAK, " ")
        has_text = any(part.strip() for part in self.buffer)
        if self.space_missing and has_text and _GLUED.match(chunk) and not self.buffer[-1][-1:].isspace():
            chunk = " " + chunk  # "God<note/>created", "clean.”</q>Immediately"
        self.space_missing = False
        if chunk.strip() and self.pending_break:
            if has_text:
                self.buffer.append(_BREAK)
            else:
                self.starts_paragraph = True
            self.pending_break = False
        if chunk.strip() or has_text:
            self.buffer.append(chunk)

    def flush(self) -> None:
        """End the current slot: turn its buffer into a verse of the open chapter."""
        lines = [re.sub(r"\s+", " ", line).strip() for line in "".join(self.buffer).split(_BREAK)]
        text = "\n".join(line for line in lines if line)
        if text and self.book is not None:
            self.book.verses.append(
                Verse(
                    self.book.osis_id,
                    self.chapter,
                    self.slot - self.chapter_slot,
                    text,
                    self.starts_paragraph,
                )
            )
        self.buffer = []
        self.starts_paragraph = False

    def tag(self, token: str) -> None:
        match = _TAG.fullmatch(token)
        if match is None:
            raise self.error(f"malformed tag {token[:60]!r}")
        closing, name, empty = match.group(1), match.group(2), match.group(4)
        attrs = dict(_ATTR.findall(match.group(3)))
        if name == "note":
            self.notes += -1 if closing else 0 if empty else 1
            self.space_missing = not self.notes
            return
        if self.notes:
            return
        if name == "q" and closing:
            self.space_missing = True
        if name == "title":
            if closing:
                if self.title == "keep":
                    self.pending_break = True
                self.title = None
            elif not empty:
                self.title = "keep" if attrs.get("canonical") == "true" else "drop"
                self.pending_break = self.pending_break or self.title == "keep"
            return
        if name in ("div", "chapter") and not closing and not empty:
            raise self.error(f"container <{name}> is not supported (only osis2mod's sID/eID milestones)")
        if name == "div":
            self.div(attrs)
        elif name == "chapter":
            self.chapter_mark(attrs)
        elif name == "milestone" and attrs.get("type") == "x-usfm-toc1" and self.book and not self.chapter:
            self.book.title = attrs.get("n", self.book.title)
        elif (name == "lg" and "sID" in attrs) or (name == "lb" and attrs.get("type") == "x-p"):
            self.pending_break = True  # a stanza or a paragraph starts
        elif name == "speaker" or (name == "item" and not closing):
            self.pending_break = True  # a speaker's label is a line of its own; so is a list item
        elif name in ("l", "lb", "item"):
            self.text(" ")  # lines of poetry run on within their stanza

    def div(self, attrs: dict[str, str]) -> None:
        kind = attrs.get("type")
        if kind == "book":
            if "sID" in attrs:
                if self.book is not None:
                    raise self.error(f"book {attrs.get('osisID')!r} opens inside {self.book.osis_id!r}")
                self.book = Book(attrs.get("osisID", "?"), attrs.get("osisID", "?"))
                self.books.append(self.book)
                self.chapter, self.chapter_slot = 0, -1
            elif "eID" in attrs:
                self.flush()
                self.book, self.chapter = None, 0
        elif kind in _SKIPPED_DIVS:
            if "sID" in attrs:
                self.skipped.add(attrs["sID"])
            else:
                self.skipped.discard(attrs.get("eID", ""))
        elif kind == "x-p" and "sID" in attrs:
            self.pending_break = True

    def chapter_mark(self, attrs: dict[str, str]) -> None:
        if "eID" in attrs:
            return  # text after a chapter's end mark (rare) still belongs to the slot's verse
        if self.book is None:
            raise self.error(f"chapter {attrs.get('osisID')!r} outside any book")
        number = attrs.get("osisID", "").rpartition(".")[2] or attrs.get("n", "")
        if not number.isdigit():
            raise self.error(f"chapter mark without a number: {attrs}")
        self.flush()
        self.chapter, self.chapter_slot = int(number), self.slot
        self.pending_break = True

    def read(self, entries: list[str]) -> list[Book]:
        for slot, entry in enumerate(entries):
            self.flush()
            self.slot = slot
            for token in _TOKEN.findall(entry):
                if token.startswith("<"):
                    self.tag(token)
                else:
                    self.text(html.unescape(token))
        self.flush()
        if self.book is not None:
            raise PrunebenchError(f"{PACKAGE}: book {self.book.osis_id!r} of {self.name} never closes")
        return self.books


def parse_osis(entries: list[str], name: str) -> list[Book]:
    """Turn a testament's slots (from :func:`read_ztext`) into books of plain-text verses, in order.

    ``name`` is used in error messages. Markup the reader does not understand (a malformed tag, a
    container ``<div>``, a chapter outside a book, a book left open) is a :class:`PrunebenchError`.
    """
    return _Reader(name).read(entries)


def read_bible(files: dict[str, bytes], data_dir: str) -> dict[str, Book]:
    """All books of the module, by OSIS id, from the testament files read out of the package."""
    books: dict[str, Book] = {}
    for testament in TESTAMENTS:
        parts = (files[f"{data_dir}/{testament}.{ext}"] for ext in ("bzs", "bzz", "bzv"))
        for book in parse_osis(read_ztext(*parts, name=testament), testament):
            books[book.osis_id] = book
    return books


def build_splits(books: dict[str, Book]) -> dict[str, str]:
    """Each split as text: one paragraph per line, the book's title first, books separated by a blank line."""
    missing = [b for names in SPLIT_BOOKS.values() for b in names if b not in books]
    if missing:
        raise PrunebenchError(f"{PACKAGE}: the module lacks the books {', '.join(missing)}")
    return {
        split: "\n\n".join("\n".join(books[b].paragraphs()) for b in names) + "\n"
        for split, names in SPLIT_BOOKS.items()
    }


def split_paths(out_dir: str | Path) -> dict[str, Path]:
    """Where each split lives: ``{out_dir}/{split}.txt.gz``."""
    return {s: Path(out_dir) / f"{s}.txt.gz" for s in SPLITS}


def build_text(deb_dir: str | Path, out_dir: str | Path, download: bool = True) -> dict[str, Path]:
    """Build the validation and test splits from the Debian package and write them (gzip, atomically).

    Also writes ``SOURCE.json`` (package file, SHA-256, module version, books, sizes per split).
    Everything is checked before anything is written.
    """
    from prunebench.demo import debian
    from prunebench.io import atomic_write_text

    deb = debian.find_or_download(PACKAGE, deb_dir, download=download)
    conf = read_conf(debian.read_members(deb, [CONF])[CONF].decode("utf-8", "replace"))
    data_dir = check_conf(conf)
    wanted = [f"{data_dir}/{t}.{ext}" for t in TESTAMENTS for ext in ("bzs", "bzz", "bzv")]
    books = read_bible(debian.read_members(deb, wanted), data_dir)
    splits = build_splits(books)
    source = {
        "package": deb.name,
        "sha256": debian.sha256(deb),
        "module": MODULE,
        "module_version": conf.get("Version", ""),
        "versification": conf.get("Versification", ""),
        "books": {s: list(names) for s, names in SPLIT_BOOKS.items()},
        "verses": {s: sum(len(books[b].verses) for b in names) for s, names in SPLIT_BOOKS.items()},
        "characters": {s: len(t) for s, t in splits.items()},
        "paragraphs": {s: sum(1 for line in t.splitlines() if line) for s, t in splits.items()},
    }
    paths = split_paths(out_dir)
    for split, text in splits.items():
        atomic_write_text(paths[split], text)
    atomic_write_text(Path(out_dir) / "SOURCE.json", json.dumps(source, indent=2) + "\n")
    return paths
