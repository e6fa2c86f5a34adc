"""Sentence splitting for the demo corpus (19th-century prose with "Mr." and quoted speech)."""

from __future__ import annotations

import re

_ABBREVIATIONS = ("Mr.", "Mrs.", "Dr.", "St.", "Messrs.", "Esq.", "Col.", "Capt.", "Sir.", "No.")
_END = re.compile(r"[.!?]+[\"')]*\s+")


def sentences(paragraph: str) -> list[str]:
    """Split a paragraph into sentences at ``. ! ?`` (with closing quotes) before a capital or quote.

    A period that ends a title such as ``Mr.`` does not end a sentence.
    """
    out: list[str] = []
    start = 0
    for m in _END.finditer(paragraph):
        nxt = paragraph[m.end() : m.end() + 1]
        piece = paragraph[start : m.end()].strip()
        if not (nxt.isupper() or nxt in "\"'") or piece.endswith(_ABBREVIATIONS):
            continue
        out.append(piece)
        start = m.end()
    tail = paragraph[start:].strip()
    if tail:
        out.append(tail)
    return out
