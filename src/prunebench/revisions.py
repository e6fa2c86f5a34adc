"""The Hub revisions a study pins for its models and data sets, and the commits they resolve to.

A study pins a revision (branch, tag or commit) with ``models.<name>.revision`` and
``data_revisions.<owner/name>`` (the data set's repository, as :data:`prunebench.data.hub.HUB_SOURCES`
names it); unpinned, a model is read at ``main`` and a data set at its source's
own branch (:data:`prunebench.data.hub.HUB_SOURCES`), and the preflight rule records the commit that
was served. The workflow hands the pins to every job in the environment variable
``PRUNEBENCH_REVISIONS`` (JSON ``{"models": {hub_id: revision}, "datasets": {repo: revision}}``),
so each loader reads the same revision without every command taking an option for it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from prunebench.errors import PrunebenchError

ENV = "PRUNEBENCH_REVISIONS"


def study_revisions(config: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The pins of a validated study config: Hub model ids and Hub data-set names to revisions."""
    models = {spec["path"]: spec["revision"] for spec in config["models"].values() if spec.get("revision")}
    return {"models": models, "datasets": dict(config.get("data_revisions", {}))}


def export(config: dict[str, Any]) -> None:
    """Put the study's pins in this process's environment, where the jobs it starts read them."""
    os.environ[ENV] = json.dumps(study_revisions(config), sort_keys=True)


def _pins() -> dict[str, dict[str, str]]:
    text = os.environ.get(ENV)
    if not text:
        return {"models": {}, "datasets": {}}
    try:
        pins = json.loads(text)
    except ValueError:
        raise PrunebenchError(f"{ENV} is not JSON: {text[:80]!r}") from None
    return {"models": pins.get("models", {}), "datasets": pins.get("datasets", {})}


def model_revision(name: str) -> str | None:
    """The pinned revision of Hub model ``name``; ``None``: the Hub's default branch."""
    return _pins()["models"].get(str(name))


def dataset_revision(repo: str) -> str | None:
    """The pinned revision of Hub data set ``repo`` (``owner/name``); ``None``: its source's branch."""
    return _pins()["datasets"].get(repo)
