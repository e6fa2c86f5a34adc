"""The preflight: open every model, data set and lm-eval task a study names, before any job needs it.

The checks made when the DAG is built (:mod:`prunebench.study.checks`) read configs and local files
only; what needs the network or opening a file is checked here, by the workflow's first rule, in
seconds: each model's config and tokenizer, the first rows of each split of each Hub data set the study
reads, and each lm-eval task's data set split. Every problem is one line, all raised together. What
was opened is recorded (:func:`write_preflight`): the commit each Hub revision resolved to, or the
local path, for the report's provenance.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunebench.data.hub import HUB_SOURCES, HUB_STREAMS, HubSource
from prunebench.data.text import check_text_source, local_text_file
from prunebench.errors import PrunebenchError, warn
from prunebench.io import atomic_write_text
from prunebench.study.config import Problems, ppl_split

#: Rows read of each split to check a data set opens and has its text column.
FIRST_ROWS = 2


@dataclass(frozen=True)
class TextUse:
    """One text the study reads: the config key that names it, the source, the split."""

    key: str
    source: str
    split: str


def text_uses(config: dict[str, Any]) -> list[TextUse]:
    """Every text of a validated study config: calibration (shared, or each method's own in paper
    mode), recovery data (train; validation when validated on it) and perplexity data."""
    from prunebench.methods import available_methods
    from prunebench.recovery import RecoveryConfig
    from prunebench.recovery.data import is_instruction_source

    uses = []
    calibration = config["calibration"]
    if calibration["mode"] == "shared":
        uses.append(TextUse("config.calibration.source", calibration["source"], "train"))
    else:
        registered = available_methods()
        for name, spec in config["methods"].items():
            cls = registered.get(spec.get("method", name))
            if spec["kind"] == "library" and cls is not None and cls.uses_calibration:
                source = cls.Config.from_params(spec.get("params")).calib_dataset
                uses.append(TextUse(f"config.methods.{name}.params.calib_dataset", source, "train"))
    for name, spec in config["recovery"].items():
        if name == "none":
            continue
        uses.append(TextUse(f"config.recovery.{name}.data", spec["data"], "train"))
        validates = RecoveryConfig.from_params(spec["params"]).val_batches > 0
        if validates and not is_instruction_source(spec["data"]) and not Path(spec["data"]).is_file():
            uses.append(TextUse(f"config.recovery.{name}.data", spec["data"], "validation"))
    ppl = config["evaluation"]["ppl"]
    for name, source in ppl["datasets"].items():
        uses.append(TextUse(f"config.evaluation.ppl.datasets.{name}", source, ppl_split(ppl, name)))
    return uses


def _hub_source(use: TextUse, config: dict[str, Any]) -> HubSource | None:
    """The Hub data set a text use reads (a method may read its own for a name), or ``None`` if local."""
    from prunebench.methods import available_methods
    from prunebench.recovery.variants import get_variant

    if Path(use.source).exists():
        return None
    # A recovery variant with a CPT phase streams its corpus (prunebench.recovery.stream).
    streamed = use.key.startswith("config.recovery.") and use.source in HUB_STREAMS
    if streamed and "cpt" in get_variant(use.key.split(".")[2]).phases:
        return HUB_STREAMS[use.source]
    if use.source not in HUB_SOURCES:
        return None
    method = (
        use.key.removeprefix("config.methods.").split(".")[0]
        if use.key.startswith("config.methods.")
        else None
    )
    if method is not None:
        spec = config["methods"][method]
        cls = available_methods()[spec.get("method", method)]
        return getattr(cls, "hub_data", {}).get(use.source, HUB_SOURCES[use.source])
    return HUB_SOURCES[use.source]


def _commit(kind: str, repo: str, revision: str) -> str:
    """The commit ``revision`` of Hub repository ``repo`` resolves to (``kind``: model or dataset)."""
    from huggingface_hub import HfApi

    api = HfApi()
    info = (
        api.model_info(repo, revision=revision)
        if kind == "model"
        else api.dataset_info(repo, revision=revision)
    )
    return info.sha


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _check_model(name: str, spec: dict[str, Any], problems: Problems, record: dict[str, Any]) -> None:
    """Config and tokenizer open; a Hub model's revision is resolved to its commit."""
    from huggingface_hub import constants

    from prunebench.models.checkpoint import _load_tokenizer, load_config
    from prunebench.models.hub import local_parent, looks_like_hub_id

    where = f"config.models.{name}"
    if "gguf" in spec:
        record[name] = {"source": spec["gguf"].get("source"), "kind": "gguf file"}
        return  # imported by its own rule; the file was checked when the DAG was built
    path = spec["path"]
    if Path(path).exists() or not looks_like_hub_id(path) or local_parent(path) is not None:
        record[name] = {"source": path, "kind": "local directory"}
    else:
        revision = spec.get("revision", "main")
        entry = {"source": path, "kind": "hub model", "revision": revision, "commit": None}
        if constants.HF_HUB_OFFLINE:
            entry["kind"] = "hub model (offline: local cache)"
        else:
            try:
                entry["commit"] = _commit("model", path, revision)
            except Exception as exc:  # gated, missing, no network: one line each
                problems.add(
                    f"{where}.path", f"{path}@{revision} cannot be resolved on the Hub: {_first_line(exc)}"
                )
                return
        record[name] = entry
    with problems.under(f"{where}.path"):
        load_config(path)
        _load_tokenizer(path)


def _check_dataset(
    keys: list[str], source: HubSource, split: str, problems: Problems, record: dict[str, Any]
) -> None:
    """The split opens at the served revision (resolved to its commit), has the text column, and its
    first row starts as the papers' loaders read it (a difference is a warning: the data changed).
    ``keys``: the config keys that read it, named together in its one problem line."""
    from huggingface_hub import constants

    where = ", ".join(keys)
    revision = source.served_revision()
    entry = record.get(source.repo)
    if entry is None:
        entry = record[source.repo] = {
            "kind": "hub data set",
            "revision": revision,
            "commit": None,
            "splits": [],
        }
        if not constants.HF_HUB_OFFLINE:
            try:
                entry["commit"] = _commit("dataset", source.repo, revision)
            except Exception as exc:
                entry["kind"] = "hub data set (not resolved)"
                problems.add(
                    where, f"{source.repo}@{revision} cannot be resolved on the Hub: {_first_line(exc)}"
                )
    if entry["kind"] != "hub data set":
        return  # its repository is reported already
    try:
        rows = source.first_rows(split, FIRST_ROWS, entry["commit"] or revision)
    except PrunebenchError as exc:
        problems.add(where, str(exc))
        return
    if not rows or source.column not in rows[0]:
        found = ", ".join(rows[0]) if rows else "no rows"
        problems.add(where, f"{source.repo} {split}: no column {source.column!r} ({found})")
        return
    entry["splits"].append(split)
    expected = source.starts.get(split)
    first = source.join.join(row[source.column] for row in rows)
    if expected is not None and not first.startswith(expected[: len(first)]):
        warn(
            f"{where}: {source.repo} {split} starts {first[:40]!r}, not {expected[:40]!r} as the papers read it"
        )


def _check_texts(config: dict[str, Any], problems: Problems, record: dict[str, Any]) -> None:
    """Local texts exist, hold their split and decode; each Hub data set split is opened once."""
    encoding = config["text_encoding"]
    hub_splits: dict[tuple[str, str | None, str], tuple[HubSource, list[str]]] = {}
    for use in text_uses(config):
        source = _hub_source(use, config)
        if source is None:
            with problems.under(use.key):
                check_text_source(use.source, use.split, encoding)
                path = local_text_file(use.source, use.split)
                record[str(path or use.source)] = {"kind": "local text"}
        else:
            where = (source.repo, source.files.get(use.split), use.split)
            hub_splits.setdefault(where, (source, []))[1].append(use.key)
    for (_, _, split), (source, keys) in hub_splits.items():
        _check_dataset(keys, source, split, problems, record)


def _check_tasks(config: dict[str, Any], problems: Problems, record: dict[str, Any]) -> None:
    """Each task resolves in lm-eval and the split it evaluates opens (its first row is read)."""
    from prunebench.evaluation.zeroshot import ZeroShotConfig, task_manager

    zeroshot = config["evaluation"]["zeroshot"]
    if not zeroshot["tasks"]:
        return
    where = "config.evaluation.zeroshot.tasks"
    try:
        manager = task_manager(
            ZeroShotConfig(tasks=tuple(zeroshot["tasks"]), include_path=zeroshot["include_path"])
        )
    except PrunebenchError as exc:
        problems.add(where, str(exc))
        return
    for task in zeroshot["tasks"]:
        with problems.under(f"{where}.{task}"):
            record[task] = _open_task(manager.task_index[task])


def _open_task(entry: Any) -> dict[str, Any]:
    """Open the split an lm-eval task evaluates (test, else validation), as lm-eval's ``download``
    would: its ``custom_dataset`` function, or the first row of its data set streamed. A group or tag
    is recorded as such (its tasks open their own data)."""
    import datasets
    from lm_eval.tasks._yaml_loader import load_yaml

    spec = load_yaml(entry.yaml_path, resolve_func=True) if entry.yaml_path else (entry.cfg or {})
    if "dataset_path" not in spec and "custom_dataset" not in spec:
        return {"kind": f"lm-eval {entry.kind.name.lower()}"}
    split = spec.get("test_split") or spec.get("validation_split")
    if split is None:
        raise PrunebenchError("lm-eval's task names no test or validation split")
    kwargs = {k: v for k, v in (spec.get("dataset_kwargs") or {}).items() if k != "trust_remote_code"}
    if "custom_dataset" in spec:
        found = spec["custom_dataset"](**(spec.get("metadata") or {}), **kwargs)
        if split not in found:
            raise PrunebenchError(f"its data has no {split} split (it has {', '.join(found)})")
        return {"kind": "lm-eval task", "dataset": str(entry.yaml_path), "split": split}
    path, name = spec["dataset_path"], spec.get("dataset_name")
    try:
        next(iter(datasets.load_dataset(path, name, split=split, streaming=True, **kwargs)))
    except Exception as exc:  # no network, no such data set or split, a loading script: one line
        raise PrunebenchError(f"cannot open {path} {split}: {_first_line(exc)}") from None
    return {"kind": "lm-eval task", "dataset": path, "name": name, "split": split}


def preflight(config: dict[str, Any]) -> dict[str, Any]:
    """Open everything a validated study names; the record of what was opened (see module doc).

    Raises one ``PrunebenchError`` listing every problem, one line each (a model whose config or
    tokenizer does not open, a data set split that cannot be read, a task that lm-eval does not know or
    whose split does not open, a missing or undecodable local text).
    """
    problems = Problems()
    record: dict[str, Any] = {"models": {}, "data": {}, "tasks": {}}
    for name, spec in config["models"].items():
        _check_model(name, spec, problems, record["models"])
    _check_texts(config, problems, record["data"])
    _check_tasks(config, problems, record["tasks"])
    if problems.lines:
        count = "1 problem" if len(problems.lines) == 1 else f"{len(problems.lines)} problems"
        raise PrunebenchError(f"preflight found {count}:\n  " + "\n  ".join(problems.lines))
    return record


def write_preflight(config: dict[str, Any], out: str | os.PathLike) -> dict[str, Any]:
    """Run :func:`preflight` and write its record to ``out`` as JSON, atomically."""
    record = preflight(config)
    atomic_write_text(out, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record
