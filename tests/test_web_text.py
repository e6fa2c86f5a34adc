"""The World English Bible evaluation text: zText reading, OSIS clean-up, shipped splits, rebuild."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from deb_helpers import make_deb

from prunebench.data import load_text
from prunebench.demo import bible
from prunebench.errors import PrunebenchError
from prunebench.io import read_text

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "resources/texts/web"
DEBS = ROOT / "resources/texts/.debs"
DATA = "usr/share/sword/modules/texts/ztext/engWEB2015eb"
CONF = """[engWEB2015eb]
DataPath=./modules/texts/ztext/engWEB2015eb/
ModDrv=zText
SourceType=OSIS
Encoding=UTF-8
CompressType=ZIP
Versification=NRSVA
Version=9.9
"""


def ztext(slots: list[str], per_block: int = 3) -> tuple[bytes, bytes, bytes]:
    """The .bzs, .bzz and .bzv files of a testament holding ``slots``, ``per_block`` slots per zlib block."""
    bzs, bzz, bzv = bytearray(), bytearray(), bytearray()
    for number, start in enumerate(range(0, len(slots), per_block)):
        block = b""
        for slot in slots[start : start + per_block]:
            data = slot.encode("utf-8")
            bzv += struct.pack("<IIH", number, len(block), len(data))
            block += data
        packed = zlib.compress(block)
        bzs += struct.pack("<III", len(bzz), len(packed), len(block))
        bzz += packed
    return bytes(bzs), bytes(bzz), bytes(bzv)


def book_slots(osis: str, title: str, chapters: list[list[str]]) -> list[str]:
    """A book's slots as osis2mod lays them out: book heading, then per chapter a heading and its verses."""
    slots = [f'<div osisID="{osis}" sID="{osis}-b" type="book"/><milestone n="{title}" type="x-usfm-toc1"/>']
    for number, verses in enumerate(chapters, start=1):
        slots.append(f'<chapter osisID="{osis}.{number}" sID="{osis}.{number}"/>')
        slots.extend(verses)
    slots[-1] += f'<div eID="{osis}-b" osisID="{osis}" type="book"/>'
    return slots


# One testament exercising the markup of the real module: Strong's <w> tags, footnotes and cross
# references (with the space after them lost, as osis2mod writes them), red-letter <q>, paragraph
# milestones, a canonical title, poetry, an editorial title, an introduction, a glossary after the book.
JOHN = [
    "",  # module heading
    '<milestone type="x-importer" subType="x-osis2mod" n="$Rev$"/>',  # testament heading
    '<div canonical="true" osisID="John" sID="b1" type="book"/> <milestone n="The Good News According to'
    ' John" type="x-usfm-toc1"/> <title level="1" type="main">John</title> <div sID="i1"'
    ' type="introduction"/> Introductions are dropped. <div eID="i1" type="introduction"/>',
    '<chapter n="1" osisID="John.1" sID="John.1"/>',
    '<div sID="p1" type="x-p"/><w lemma="strong:G1722">In</w> <w>the</w> <w>beginning</w>,'
    ' <w>God</w><note placement="foot"><reference type="annotateRef">1:1 </reference>A note.</note>'
    "<w>created</w> light.",
    "",  # 1:2 is not in this text
    '<q who="Jesus">“Come.”</q>He came &amp; saw.<div eID="p1" type="x-p"/>',
    '<div sID="p2" type="x-p"/>A new\n  paragraph.<note type="crossReference"><reference>Gen 1:1'
    '</reference></note> <title canonical="true" type="psalm">A Song.</title> <lg sID="g1"/><l level="1"'
    ' sID="l1"/>First line,<l eID="l1" level="1"/><l level="2" sID="l2"/>second line.<l eID="l2"'
    ' level="2"/><lg eID="g1"/>',
    '<chapter n="2" osisID="John.2" sID="John.2"/> <title>An editorial heading</title>',
    '<div sID="p3" type="x-p"/>Chapter two. <chapter eID="John.2"/>And after its end mark.<div eID="p3"'
    ' type="x-p"/> <div eID="b1" osisID="John" type="book"/> <div sID="gl" type="glossary"/> A glossary'
    ' entry. <div eID="gl" type="glossary"/>',
]


def test_read_ztext_returns_every_slot_across_blocks():
    slots = ["", "head", "", "verse one", "vérse two", "", "three"]
    assert bible.read_ztext(*ztext(slots, per_block=2), name="nt") == slots


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda s, z, v: (s[:-1], z, v), r"nt\.bzs or nt\.bzv is truncated"),
        (lambda s, z, v: (s, z[:10], v), r"block 0 of nt\.bzz lies past the end"),
        (lambda s, z, v: (s, b"x" * len(z), v), r"block 0 of nt\.bzz is corrupt"),
        (lambda s, z, v: (s[:8] + struct.pack("<I", 99) + s[12:], z, v), "its index says 99"),
        (
            lambda s, z, v: (s, z, v[:10] + struct.pack("<IIH", 0, 90, 5) + v[20:]),
            r"slot 1 of nt\.bzv points",
        ),
        (lambda s, z, v: (s, z, v[:10] + struct.pack("<IIH", 7, 0, 1) + v[20:]), "outside block 7"),
    ],
)
def test_read_ztext_names_the_damage(damage, message):
    files = ztext(["", "a slot", "another slot"])
    with pytest.raises(PrunebenchError, match=message):
        bible.read_ztext(*damage(*files), name="nt")


def test_read_ztext_rejects_text_that_is_not_utf8():
    block = b"ok\xff\xfe"
    packed = zlib.compress(block)
    files = (struct.pack("<III", 0, len(packed), len(block)), packed, struct.pack("<IIH", 0, 2, 2))
    with pytest.raises(PrunebenchError, match=r"slot 0 of ot\.bzv is not UTF-8"):
        bible.read_ztext(*files, name="ot")


def test_parse_osis_keeps_scripture_and_drops_notes_titles_and_front_matter():
    (john,) = bible.parse_osis(JOHN, "nt")
    assert john.osis_id == "John" and john.title == "The Good News According to John"
    verses = [(v.chapter, v.verse, v.text, v.new_paragraph) for v in john.verses]
    assert verses == [
        (1, 1, "In the beginning, God created light.", True),
        # 1:2 is an empty slot; the numbering after it still follows the slots.
        (1, 3, "“Come.” He came & saw.", False),
        (1, 4, "A new paragraph.\nA Song.\nFirst line, second line.", True),
        (2, 1, "Chapter two. And after its end mark.", True),
    ]
    assert john.paragraphs() == [
        "The Good News According to John",
        "In the beginning, God created light. “Come.” He came & saw.",
        "A new paragraph.",
        "A Song.",
        "First line, second line.",
        "Chapter two. And after its end mark.",
    ]


def test_parse_osis_reads_several_books_and_falls_back_to_the_osis_id_as_title():
    slots = ["", "", *book_slots("Mark", "Mark’s Gospel", [["One.", "Two."]])]
    slots += ['<div osisID="Jude" sID="j" type="book"/>', '<chapter osisID="Jude.1" sID="Jude.1"/>']
    slots += ['Jude one.<div eID="j" osisID="Jude" type="book"/>']
    mark, jude = bible.parse_osis(slots, "nt")
    assert mark.paragraphs() == ["Mark’s Gospel", "One. Two."]
    assert jude.title == "Jude" and [v.text for v in jude.verses] == ["Jude one."]


@pytest.mark.parametrize(
    ("slots", "message"),
    [
        (
            ["", "", '<div osisID="X" type="book">text</div>'],
            r"slot 2 of nt: container <div> is not supported",
        ),
        (["", "", '<chapter osisID="X.1" sID="X.1"/>'], "chapter 'X.1' outside any book"),
        (["", "", '<div osisID="X" sID="x" type="book"/>'], "book 'X' of nt never closes"),
        (["", "", "<w lemma='single quotes'>word</w>"], "malformed tag"),
        (
            ["", "", '<div osisID="X" sID="x" type="book"/><div osisID="Y" sID="y" type="book"/>'],
            "book 'Y' opens inside 'X'",
        ),
        (["", "", '<div osisID="X" sID="x" type="book"/><chapter osisID="X" sID="X"/>'], "without a number"),
    ],
)
def test_parse_osis_names_markup_it_cannot_read(slots, message):
    with pytest.raises(PrunebenchError, match=message):
        bible.parse_osis(slots, "nt")


def test_conf_is_checked_before_the_module_is_read():
    conf = bible.read_conf(CONF)
    assert bible.check_conf(conf) == DATA
    with pytest.raises(PrunebenchError, match="has ModDrv=RawText, expected zText"):
        bible.check_conf({**conf, "ModDrv": "RawText"})
    with pytest.raises(PrunebenchError, match=r"has CompressType=\(missing\), expected ZIP"):
        bible.check_conf({k: v for k, v in conf.items() if k != "CompressType"})
    with pytest.raises(PrunebenchError, match="has no DataPath"):
        bible.check_conf({**conf, "DataPath": "./"})


def synthetic_package(debs: Path, books: tuple[str, ...] = ("Mark", "Luke", "John", "Acts")) -> Path:
    """A sword-text-web .deb whose New Testament holds ``books``, each two short chapters."""
    nt = ["", ""]
    for osis in books:
        nt += book_slots(osis, f"The book of {osis}", [[f"{osis} one.", f"{osis} two."], [f"{osis} three."]])
    ot = ["", "", *book_slots("Gen", "Genesis", [["In the beginning."]])]
    files = {bible.CONF: CONF.encode()}
    for testament, slots in (("ot", ot), ("nt", nt)):
        for ext, data in zip(("bzs", "bzz", "bzv"), ztext(slots), strict=True):
            files[f"{DATA}/{testament}.{ext}"] = data
    debs.mkdir(parents=True, exist_ok=True)
    return make_deb(debs / "sword-text-web_9.9-1_all.deb", files)


def test_build_text_from_a_package_writes_reproducible_splits_that_load_text_reads(tmp_path):
    synthetic_package(tmp_path / "debs")
    paths = bible.build_text(tmp_path / "debs", tmp_path / "a", download=False)
    assert load_text(str(tmp_path / "a"), "test") == (
        "The book of John\nJohn one. John two.\nJohn three.\n\nThe book of Acts\nActs one. Acts two.\nActs three.\n"
    )
    source = json.loads((tmp_path / "a/SOURCE.json").read_text())
    assert source["package"] == "sword-text-web_9.9-1_all.deb" and source["module_version"] == "9.9"
    assert source["books"] == {"validation": ["Mark", "Luke"], "test": ["John", "Acts"]}
    assert source["verses"] == {"validation": 6, "test": 6}
    assert source["paragraphs"] == {"validation": 6, "test": 6}
    assert source["characters"]["test"] == len(read_text(paths["test"]))
    bible.build_text(tmp_path / "debs", tmp_path / "b", download=False)
    for name in ("validation.txt.gz", "test.txt.gz", "SOURCE.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {"usr/share/doc/readme": b"x"},
            "unexpected layout, missing usr/share/sword/mods.d/engWEB2015eb.conf",
        ),
        ({bible.CONF: CONF.encode()}, r"unexpected layout, missing .*/nt\.bzs"),
    ],
)
def test_package_with_wrong_layout_fails_cleanly_and_writes_nothing(tmp_path, files, message):
    make_deb(tmp_path / "sword-text-web_1_all.deb", files)
    with pytest.raises(PrunebenchError, match=message):
        bible.build_text(tmp_path, tmp_path / "out", download=False)
    assert not (tmp_path / "out").exists()


def test_module_without_a_split_book_fails_and_writes_nothing(tmp_path):
    synthetic_package(tmp_path / "debs", books=("Mark", "John", "Acts"))
    with pytest.raises(PrunebenchError, match="the module lacks the books Luke"):
        bible.build_text(tmp_path / "debs", tmp_path / "out", download=False)
    assert not (tmp_path / "out").exists()


def test_build_script_reports_a_missing_package_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "workflow/scripts/build_web_text.py", "--deb-dir", str(tmp_path), "--no-download"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: sword-text-web: no sword-text-web_*.deb")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def shipped_books(split: str) -> list[list[str]]:
    """A shipped split as books, each a list of lines (title first)."""
    return [block.splitlines() for block in load_text(str(WEB), split).rstrip("\n").split("\n\n")]


@pytest.mark.parametrize("split", bible.SPLITS)
def test_shipped_split_is_one_paragraph_per_line_with_the_documented_books(split):
    text = load_text(str(WEB), split)
    assert text == read_text(WEB / f"{split}.txt.gz") and text.endswith("\n")
    books = shipped_books(split)
    assert len(books) == len(bible.SPLIT_BOOKS[split])
    for lines in books:
        assert all(line and line == line.strip() and "  " not in line for line in lines)
        assert len(lines[0]) < 60 and not lines[0].endswith(".")  # the book's title
        assert sum(map(len, lines[1:])) / len(lines[1:]) > 150  # paragraphs, not verses
    assert not any(c in text for c in "<>\t") and "&amp;" not in text
    assert 200_000 <= len(text) <= 250_000  # the range README.md documents


def test_shipped_splits_match_source_json_and_share_no_paragraph():
    source = json.loads((WEB / "SOURCE.json").read_text())
    assert source["package"].startswith("sword-text-web_") and len(source["sha256"]) == 64
    assert source["books"] == {s: list(b) for s, b in bible.SPLIT_BOOKS.items()}
    texts = {s: load_text(str(WEB), s) for s in bible.SPLITS}
    assert source["characters"] == {s: len(t) for s, t in texts.items()}
    assert source["paragraphs"] == {s: sum(1 for line in t.splitlines() if line) for s, t in texts.items()}
    assert shipped_books("validation")[0][0] == "The Good News According to Mark"
    long = {s: {line for line in t.splitlines() if len(line) > 80} for s, t in texts.items()}
    assert not long["validation"] & long["test"]


def test_load_text_names_the_split_the_folder_lacks():
    with pytest.raises(PrunebenchError, match=r"has no train\.txt or train\.txt\.gz"):
        load_text(str(WEB), "train")


@pytest.mark.skipif(not any(DEBS.glob("sword-text-web_*.deb")), reason="Debian package not downloaded")
def test_rebuild_from_the_debian_package_reproduces_the_shipped_files(tmp_path):
    bible.build_text(DEBS, tmp_path, download=False)
    for name in ("validation.txt.gz", "test.txt.gz", "SOURCE.json"):
        assert (tmp_path / name).read_bytes() == (WEB / name).read_bytes(), name
