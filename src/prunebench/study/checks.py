"""The checks of a study config that read files, model configs and lm-eval's task index.

They run once, when the DAG is built (``validate_config``), and take seconds: no job then fails for a
reason known before the first one. Each model's shapes come from its config alone (a local
directory, the Hugging Face cache or Hub, or a GGUF file's header); on them every method's own
limits at every ratio and every length of the study are checked. A check that cannot be made here (a
Hub model while the Hub cannot be reached) is skipped with a warning; the job checks it again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from prunebench.data.text import SPLITS, check_text_source
from prunebench.errors import PrunebenchError, warn
from prunebench.files import check_encoding
from prunebench.models.context import context_length
from prunebench.models.device import check_device, check_gpus
from prunebench.recovery.data import check_data_source
from prunebench.recovery.stream import is_local_corpus, is_streamed_source
from prunebench.recovery.variants import get_variant
from prunebench.study.config import Problems, _lengths, ppl_split


def check_study(config: dict[str, Any], problems: Problems, devices: bool = False) -> None:
    """Add to ``problems`` every problem of ``config`` (validated by the schema, defaults filled) that
    files, model configs or lm-eval reveal; with ``devices``, also devices this machine lacks."""
    _check_texts(config, problems)
    for model, spec in config["models"].items():
        skeleton = _skeleton(model, spec, problems)
        if skeleton is not None:
            _check_lengths(model, skeleton, config, problems)
            _check_methods(model, skeleton, config, problems)
    _check_tasks(config, problems)
    if devices:
        _check_devices(config, problems)


def check_devices(config: dict[str, Any]) -> None:
    """Raise one ``PrunebenchError`` naming every model whose device this machine does not have (for
    the workflow's start, where the executor that runs the jobs is known)."""
    problems = Problems()
    _check_devices(config, problems)
    problems.raise_any()


def _check_devices(config: dict[str, Any], problems: Problems) -> None:
    for model, spec in config["models"].items():
        with problems.under(f"config.models.{model}.device"):
            check_device(spec["device"])
        with problems.under(f"config.models.{model}.gpus"):
            check_gpus(spec["device"], spec["gpus"])


def _skeleton(model: str, spec: dict[str, Any], problems: Problems) -> nn.Module | None:
    """The model's modules on the meta device, read from its config alone; ``None`` when the model
    has a problem (added) or cannot be looked at here (warned)."""
    from prunebench.models.checkpoint import load_skeleton, skeleton_of
    from prunebench.models.hub import local_parent, look_up, looks_like_hub_id

    where = f"config.models.{model}"
    if "gguf" in spec:
        if "source" not in spec["gguf"]:
            return None  # its problem is reported already
        from prunebench.models.gguf_import import gguf_config

        with problems.under(f"{where}.gguf"):
            return skeleton_of(gguf_config(spec["gguf"]["source"]))
        return None
    path = spec["path"]
    if Path(path).exists():
        with problems.under(f"{where}.path"):
            return load_skeleton(path)
        return None
    if not looks_like_hub_id(path):
        return None  # a missing local directory, or neither path nor gguf: reported already
    parent = local_parent(path)
    if parent is not None:
        problems.add(
            f"{where}.path",
            f"model directory {path!r} does not exist ({parent}/ is a local folder, so it is not taken for a Hub id)",
        )
        return None
    lookup = look_up(path)
    if lookup.found:
        with problems.under(f"{where}.path"):
            return load_skeleton(path)
        return None
    if lookup.asked:
        problems.add(
            f"{where}.path", f"{path!r} is no local directory, and as a Hugging Face Hub id {lookup.reason}"
        )
    else:
        warn(
            f"{where}.path: {path} is no local directory and was not checked as a Hub id ({lookup.reason}); each job checks it"
        )
    return None


def _check_lengths(model: str, skeleton: nn.Module, config: dict[str, Any], problems: Problems) -> None:
    """Every length of the study (calibration, recovery, perplexity windows, latency prompt + new
    tokens) fits in the model's context (``max_position_embeddings``)."""
    limit = context_length(skeleton)
    if limit is None:
        return
    for label, length in _lengths(config):
        if length > limit:
            problems.add(
                None,
                f"{label} {length} exceeds the model's context of {limit} tokens "
                f"(max_position_embeddings of model {model})",
            )


def _check_methods(model: str, skeleton: nn.Module, config: dict[str, Any], problems: Problems) -> None:
    """Each library method supports the model's family and can realise each of the study's ratios on
    its shapes (``Method.check_ratio``: the method's own limits, as its prune job would check them)."""
    from prunebench.methods import available_methods

    registered = available_methods()
    for name, spec in config["methods"].items():
        cls = registered.get(spec.get("method", name))
        if spec["kind"] != "library" or cls is None:
            continue
        try:
            method_config = cls.Config.from_params(spec.get("params"))
        except PrunebenchError:
            continue  # reported by the semantic checks
        method = cls()
        try:
            method.check_model(skeleton)
        except PrunebenchError as exc:
            problems.add(f"config.methods.{name} (model {model})", str(exc))
            continue
        for ratio in config["ratios"]:
            with problems.under(f"config.methods.{name} at ratio {ratio} (model {model})"):
                method.check_ratio(skeleton, ratio, method_config)


def _check_texts(config: dict[str, Any], problems: Problems) -> None:
    """Every local text exists, holds the split it is read for and decodes as ``text_encoding``:
    calibration (shared source, or each method's own in paper mode), recovery data, perplexity data."""
    from prunebench.methods import available_methods
    from prunebench.recovery import RecoveryConfig

    encoding = config["text_encoding"]
    try:
        check_encoding(encoding)
    except PrunebenchError:
        return  # reported once, by the semantic checks; no text can be read without it
    calibration = config["calibration"]
    if calibration["mode"] == "shared":
        with problems.under("config.calibration.source"):
            check_text_source(calibration["source"], "train", encoding)
    else:
        registered = available_methods()
        for name, spec in config["methods"].items():
            cls = registered.get(spec.get("method", name))
            if spec["kind"] == "library" and cls is not None and cls.uses_calibration:
                with problems.under(f"config.methods.{name}.params.calib_dataset"):
                    check_text_source(
                        cls.Config.from_params(spec.get("params")).calib_dataset, "train", encoding
                    )
    for name, spec in config["recovery"].items():
        if name == "none":
            continue
        with problems.under(f"config.recovery.{name}.data"):
            check_data_source(spec["data"], encoding)
            if (
                is_streamed_source(spec["data"])
                and spec["data"] != "c4"
                and "lora" in get_variant(name).phases
            ):
                raise PrunebenchError(
                    f"{spec['data']!r} is a streamed pretraining corpus, read by CPT phases only; "
                    f"{name} has a LoRA phase"
                )
            local_text = Path(spec["data"]).is_dir() and not is_local_corpus(spec["data"])
            if local_text and RecoveryConfig.from_params(spec["params"]).val_batches > 0:
                check_text_source(spec["data"], "validation", encoding)
    ppl = config["evaluation"]["ppl"]
    for name, source in ppl["datasets"].items():
        if ppl["splits"].get(name, SPLITS[0]) not in SPLITS:
            problems.add(
                f"config.evaluation.ppl.splits.{name}",
                f"unknown split {ppl['splits'][name]!r}; choose one of {', '.join(SPLITS)}",
            )
            continue
        with problems.under(f"config.evaluation.ppl.datasets.{name}"):
            check_text_source(source, ppl_split(ppl, name), encoding)


def _check_tasks(config: dict[str, Any], problems: Problems) -> None:
    """The local task folder exists and lm-eval knows every task (close matches suggested). lm-eval is
    imported only when tasks are listed; the local folder alone answers when it holds them all."""
    zeroshot = config["evaluation"]["zeroshot"]
    include = zeroshot["include_path"]
    if include is not None and not Path(include).is_dir():
        problems.add("config.evaluation.zeroshot.include_path", f"folder {include} does not exist")
        return
    if zeroshot["tasks"]:
        from prunebench.evaluation.zeroshot import ZeroShotConfig, task_manager

        with problems.under("config.evaluation.zeroshot.tasks"):
            task_manager(ZeroShotConfig(tasks=tuple(zeroshot["tasks"]), include_path=include))
