"""Reading a study's YAML file strictly: a duplicate key is an error, a syntax error names its line.

Snakemake reads config files itself, with a loader that keeps the last of two equal keys and reports
a syntax error without its position. The workflow reads each config file again with
:func:`load_study_file` to refuse what Snakemake lets through; ``prunebench check-config`` reads a
file that Snakemake could not.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from prunebench.errors import PrunebenchError

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (``<<`` merges may override)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: yaml's own constructor reports it
                continue
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is given twice (first on line {first.start_mark.line + 1}); "
                    "YAML would silently keep the last one",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def _describe(error: yaml.YAMLError) -> str:
    """``line L, column C: problem (context that starts on line L', column C')`` from a YAML error."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    context, start = getattr(error, "context", None), getattr(error, "context_mark", None)
    if context and start is not None and start is not mark:
        problem += f" ({context} that starts on line {start.line + 1}, column {start.column + 1})"
    return where + problem


def load_study_file(path: str | os.PathLike) -> dict[str, Any]:
    """The study config in YAML (or JSON) file ``path``, read strictly.

    Raises ``PrunebenchError`` naming the file for an unreadable file, a syntax error (with its line
    and column), a key given twice in one mapping, or a document that is not a mapping.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PrunebenchError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise PrunebenchError(f"config file {path} is not UTF-8: byte offset {exc.start}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: builds no Python objects
    except yaml.YAMLError as exc:
        raise PrunebenchError(f"config file {path}, {_describe(exc)}") from None
    if not isinstance(data, dict):
        raise PrunebenchError(f"config file {path} must be a mapping of keys (models, methods, ratios, ...)")
    return data


def check_study_files(paths: list[str | os.PathLike]) -> None:
    """Read every config file strictly (:func:`load_study_file`); the first problem is raised."""
    for path in paths:
        load_study_file(path)
