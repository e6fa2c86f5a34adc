"""The report's tables as HTML: human headers with units, numbers formatted with their uncertainty, and
a ``data-sort`` value per cell that the report's few lines of script sort by (click a header)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Cell:
    """A table cell: its text, and the value it sorts by (a number, or the text itself)."""

    text: str
    sort: float | str | None = None


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(value: Any, digits: int = 3, suffix: str = "") -> Cell:
    if _missing(value):
        return Cell("", "")
    return Cell(f"{float(value):.{digits}f}{suffix}", float(value))


def percent(value: Any) -> Cell:
    return Cell("", "") if _missing(value) else Cell(f"{100 * float(value):.1f}", float(value))


def with_interval(value: Any, low: Any, high: Any, digits: int = 2, suffix: str = "") -> Cell:
    """``value`` and, where known, its interval in small print: ``1.23× (1.10–1.40)``."""
    if _missing(value):
        return Cell("", "")
    text = f"{float(value):.{digits}f}{suffix}"
    if not _missing(low) and not _missing(high):
        text += f" <small>({float(low):.{digits}f}–{float(high):.{digits}f})</small>"
    return Cell(text, float(value))


def plus_minus(value: Any, error: Any, digits: int = 3) -> Cell:
    """``value ± error``, the error omitted where unknown."""
    if _missing(value):
        return Cell("", "")
    text = f"{float(value):.{digits}f}"
    if not _missing(error):
        text += f" <small>± {float(error):.{digits}f}</small>"
    return Cell(text, float(value))


def rank(value: Any, tied: bool) -> Cell:
    """A rank, ``=2`` when another method shares it (a tie within the uncertainty)."""
    if _missing(value):
        return Cell("—", "")
    return Cell(f"{'=' if tied else ''}{int(value)}", float(value))


def table(headers: Sequence[tuple[str, str]], rows: Sequence[Sequence[Cell]], css: str = "") -> str:
    """A sortable table. ``headers``: (header, tooltip: what it is and its unit); cell text is HTML that
    the caller built from formatted numbers (texts from the study are escaped here via :func:`text`)."""
    head = "".join(
        f'<th title="{html.escape(tip)}" aria-sort="none">{html.escape(name)}</th>' for name, tip in headers
    )
    body = []
    for row in rows:
        cells = "".join(
            f'<td data-sort="{html.escape(str(c.sort if c.sort is not None else c.text))}">{c.text}</td>'
            for c in row
        )
        body.append(f"<tr>{cells}</tr>")
    return (
        f'<table class="sortable {css}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


def text(value: Any) -> Cell:
    """A cell of plain text from the study (escaped)."""
    return Cell("", "") if _missing(value) else Cell(html.escape(str(value)), str(value))
