"""Typed option values from config files and ``--param key=value`` strings (methods and recovery)."""

from __future__ import annotations

from typing import Any


def _parse_bool(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(text)
    return text.lower() in ("true", "1", "yes")


PARSERS = {"bool": _parse_bool, "int": int, "float": float}


def parse_option(value: Any, annotation: Any) -> Any:
    """``value`` as a dataclass field's declared type (a string under postponed annotations).

    Strings are parsed (``"0.5"`` for ``float``; ``"none"`` / ``"null"`` for ``X | None``);
    ``tuple[...]`` fields take ``"a,b"`` or a list; other values pass unchanged. A string that is not
    of the type raises ``ValueError``; callers turn it into their own message.
    """
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    kinds = [part.strip() for part in name.split("|")]
    if "None" in kinds and isinstance(value, str) and value.lower() in ("none", "null"):
        return None
    kind = next(k for k in kinds if k != "None")
    if kind.startswith("tuple"):
        items = value.split(",") if isinstance(value, str) else value
        return tuple((float if "float" in kind else str)(item) for item in items)
    if not isinstance(value, str) or kind not in PARSERS:
        return value
    return PARSERS[kind](value)
