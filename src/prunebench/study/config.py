"""Validate a study config against workflow/schemas/config.schema.yaml and fill in its defaults."""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from prunebench.errors import PrunebenchError
from prunebench.files import check_encoding
from prunebench.models.device import parse_device
from prunebench.models.hub import looks_like_hub_id
from prunebench.study.grid import CALIBRATION_FOLDER, DENSE, RESULTS_FOLDERS, study_root

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def _with_defaults(validator_class: type) -> type:
    """A validator that fills in ``default`` values of properties as it validates (jsonschema FAQ)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: dict, instance: Any, schema: dict) -> Iterator[Any]:
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _describe(error: jsonschema.ValidationError) -> tuple[str, str]:
    """The key's path and the problem of one schema error."""
    where = "config." + ".".join(str(p) for p in error.absolute_path) if error.absolute_path else "config"
    allowed = ""
    if error.validator == "additionalProperties":
        allowed = f" (allowed keys: {', '.join(sorted(error.schema.get('properties', {})))})"
    elif error.validator == "enum":
        allowed = f" (allowed: {', '.join(map(str, error.validator_value))})"
    elif "description" in error.schema:
        allowed = f" ({error.schema['description'].strip()})"
    message = (
        f"{error.instance!r} is not allowed" if error.validator == "pattern" and allowed else error.message
    )
    return where, f"{message}{allowed}"


def _normalise(config: dict[str, Any]) -> None:
    """Empty entries (``lora:`` with nothing after it) become ``{}`` so defaults can be filled."""
    for section in ("methods", "recovery"):
        for key, value in list(config.get(section, {}).items()):
            if value is None:
                config[section][key] = {}


def validate_config(
    config: dict[str, Any],
    schema: dict[str, Any] | None = None,
    *,
    files: bool = True,
    devices: bool = False,
) -> dict[str, Any]:
    """A validated copy of ``config`` with defaults filled in.

    Every problem found is one line naming its config key, and all of them are raised together in one
    ``PrunebenchError``. The schema comes first (a config that breaks it is not checked further),
    then finite numbers, then what the schema cannot say (``_check_semantics``). With ``files`` also
    what needs files, models and lm-eval, in seconds (:func:`prunebench.study.checks.check_study`:
    local paths and their encoding, model files, each method's limits at each ratio and every length
    on each model's shapes, lm-eval task names). With ``devices`` also that each model's device is
    available on this machine (leave it off where the jobs run elsewhere, e.g. a cluster's login node).
    """
    config = copy.deepcopy(config)
    _normalise(config)
    problems = Problems()
    validator = _with_defaults(jsonschema.Draft7Validator)(schema or load_schema())
    for error in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        problems.add(*_describe(error))
    problems.raise_any()
    _check_finite(config, problems)
    problems.raise_any()
    _check_semantics(config, problems)
    if files:
        from prunebench.study.checks import check_study

        check_study(config, problems, devices=devices)
    problems.raise_any()
    return config


class Problems:
    """The problems found in a study config, each one line naming its key, raised all together."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, where: str | None, message: str) -> None:
        """One problem: ``where: message``, or ``message`` alone when it names its key itself."""
        self.lines.append(message if where is None else f"{where}: {message}")

    @contextlib.contextmanager
    def under(self, where: str | None) -> Iterator[None]:
        """A ``PrunebenchError`` raised in the block becomes a problem of ``where`` (see :meth:`add`)."""
        try:
            yield
        except PrunebenchError as exc:
            self.add(where, str(exc))

    def raise_any(self) -> None:
        if len(self.lines) == 1:
            raise PrunebenchError(f"invalid config: {self.lines[0]}")
        if self.lines:
            raise PrunebenchError(
                f"invalid config, {len(self.lines)} problems:\n  " + "\n  ".join(self.lines)
            )


def _check_finite(value: Any, problems: Problems, where: str = "config") -> None:
    """Refuse NaN and infinity anywhere (a schema's bounds let NaN through: every comparison is false)."""
    if isinstance(value, float) and not math.isfinite(value):
        problems.add(where, f"{value} is not a finite number")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        _check_finite(item, problems, f"{where}.{key}")


def _check_placement(name: str, spec: dict[str, Any], problems: Problems) -> None:
    """``gpus`` only on CUDA, sizes that parse, a budget only with ``stream``, streaming from local files."""
    where = f"config.models.{name}"
    if spec["gpus"] > 1 and not spec["device"].startswith("cuda"):
        problems.add(
            f"{where}.gpus",
            f"gpus: {spec['gpus']} splits a model over CUDA devices; device is {spec['device']!r}",
        )
    if spec["gpus"] > 1 and spec["stream"]:
        problems.add(
            f"{where}.stream", "a streamed pass runs on one device: give stream or gpus > 1, not both"
        )
    from prunebench.models.streaming import parse_bytes  # torch: only for a config that names a size

    for key in ("gpu_memory", "device_budget"):
        if key in spec:
            with problems.under(f"{where}.{key}"):
                parse_bytes(spec[key], key)
    if "gpu_memory" in spec and spec["gpus"] == 1:
        problems.add(f"{where}.gpu_memory", "gpu_memory limits a model split over GPUs: set gpus > 1")
    if "device_budget" in spec and not spec["stream"]:
        problems.add(f"{where}.device_budget", "a device budget applies to a streamed pass: set stream: true")
    if spec["stream"] and "path" in spec and not Path(spec["path"]).is_dir():
        problems.add(f"{where}.stream", f"streaming reads a local model directory; {spec['path']!r} is none")


def _check_semantics(config: dict[str, Any], problems: Problems) -> None:
    """What a schema cannot say, without reading files: names, methods and their options, model
    sources, devices, the text encoding, ratios and recovery selections."""
    for section, reserved in (("models", RESULTS_FOLDERS), ("methods", (DENSE, CALIBRATION_FOLDER))):
        for name in config[section]:
            if name in reserved:
                problems.add(
                    f"config.{section}.{name}", "the name is taken by the study's own results/<study>/ paths"
                )
    for name, spec in config["methods"].items():
        _check_method(name, spec, problems)
    for name, spec in config["models"].items():
        _check_model_source(name, spec, study_root(config), problems)
        with problems.under(f"config.models.{name}.device"):
            parse_device(spec["device"])
        _check_placement(name, spec, problems)
    with problems.under("config.text_encoding"):
        check_encoding(config["text_encoding"])
    _check_data_revisions(config, problems)
    _check_ppl_splits(config["evaluation"]["ppl"], problems)
    if len(set(config["ratios"])) != len(config["ratios"]):
        problems.add("config.ratios", "ratios must be unique")
    for name, spec in config["recovery"].items():
        _check_recovery_params(name, spec, problems)
        off_gpu = [m for m, model in config["models"].items() if not model["device"].startswith("cuda")]
        if spec.get("gpus", 1) > 1 and off_gpu:
            problems.add(
                f"config.recovery.{name}.gpus",
                f"{spec['gpus']} GPUs need models on cuda, but {', '.join(off_gpu)} run on cpu",
            )
        extra = set(spec.get("ratios", [])) - set(config["ratios"])
        if extra:
            problems.add(
                f"config.recovery.{name}.ratios",
                f"{sorted(extra)} not among config.ratios {config['ratios']}",
            )
        unknown = set(spec.get("methods", [])) - set(config["methods"])
        if unknown:
            problems.add(f"config.recovery.{name}.methods", f"{sorted(unknown)} not among config.methods")


def ppl_split(ppl: dict[str, Any], dataset: str) -> str:
    """The split perplexity data set ``dataset`` is read from: ``ppl.splits[dataset]``, else ``ppl.split``
    (``ppl`` is a validated ``config.evaluation.ppl``)."""
    return ppl["splits"].get(dataset, ppl["split"])


def _check_ppl_splits(ppl: dict[str, Any], problems: Problems) -> None:
    """Every key of ``evaluation.ppl.splits`` names one of the perplexity data sets."""
    unknown = set(ppl["splits"]) - set(ppl["datasets"])
    if unknown:
        problems.add(
            "config.evaluation.ppl.splits",
            f"{sorted(unknown)} not among config.evaluation.ppl.datasets {sorted(ppl['datasets'])}",
        )


def _check_data_revisions(config: dict[str, Any], problems: Problems) -> None:
    """Every key of ``data_revisions`` is the repository of a Hub data set the project reads."""
    from prunebench.data.hub import HUB_REPOS

    for repo in config["data_revisions"]:
        if repo not in HUB_REPOS:
            problems.add(
                f"config.data_revisions.{repo}",
                f"not a Hub data set prunebench reads (known: {', '.join(sorted(HUB_REPOS))})",
            )


def _check_method(name: str, spec: dict[str, Any], problems: Problems) -> None:
    """A library entry runs a registered method with options it knows; a rule entry has its module."""
    from prunebench.methods import available_methods

    registered = available_methods()
    rule_dir = SCHEMA_PATH.parents[1] / "rules" / "methods"
    if spec.get("kind", "library") == "library":
        method = spec.get("method", name)
        if method not in registered:
            key = f"config.methods.{name}.method" if "method" in spec else f"config.methods.{name}"
            problems.add(
                key,
                f"unknown method {method!r} (registered: {', '.join(registered)}; "
                f"or set kind: rule and add workflow/rules/methods/{name}.smk)",
            )
            return
        with problems.under(f"config.methods.{name}.params"):
            registered[method].Config.from_params(spec.get("params"))
    elif "method" in spec:
        problems.add(f"config.methods.{name}.method", "a rule method names no registered method")
    elif not (rule_dir / f"{name}.smk").is_file():
        problems.add(f"config.methods.{name}", f"kind rule needs workflow/rules/methods/{name}.smk")


def _check_model_source(name: str, spec: dict[str, Any], root: str, problems: Problems) -> None:
    """Either ``path`` or ``gguf``; sets ``path`` to the imported checkpoint of a GGUF model."""
    if ("path" in spec) == ("gguf" in spec):
        problems.add(f"config.models.{name}", "give either path or gguf")
        spec.setdefault("path", "")
        return
    if "gguf" in spec:
        if "revision" in spec:
            problems.add(f"config.models.{name}.revision", "a revision is for a Hub model, not a GGUF file")
        spec["path"] = imported_model_dir(root, name)
        _check_gguf(spec["gguf"], f"config.models.{name}.gguf", problems)
        return
    path = spec["path"]
    if not Path(path).exists() and not looks_like_hub_id(path):
        problems.add(f"config.models.{name}.path", f"model directory {path!r} does not exist")
    elif "revision" in spec and Path(path).exists():
        problems.add(
            f"config.models.{name}.revision", f"{path} is a local directory: a revision is for a Hub model"
        )


def _check_gguf(spec: dict[str, Any], where: str, problems: Problems) -> None:
    """The GGUF source exists and can be imported; records its file as ``spec["source"]``."""
    import importlib.util

    from prunebench.models.gguf_import import packaged_file

    if importlib.util.find_spec("gguf") is None:
        problems.add(where, "needs the gguf package: pip install 'prunebench[real-model]'")
        return
    try:
        source = packaged_file(spec["package"], spec["file"]) if "package" in spec else Path(spec["file"])
    except PrunebenchError as exc:
        problems.add(where, str(exc))
        return
    if not source.is_file():
        problems.add(f"{where}.file", f"{source} does not exist")
        return
    spec["source"] = str(source)


def imported_model_dir(root: str, model: str) -> str:
    """Where rule import_gguf writes the checkpoint of model ``model`` in the study folder ``root``."""
    return f"{root}/{model}/imported"


def _lengths(config: dict[str, Any]) -> list[tuple[str, int]]:
    """Every length in tokens the study runs a model at, with the config key that sets it."""
    from prunebench.methods import available_methods

    lengths = []
    if config["calibration"]["mode"] == "shared":
        lengths.append(("config.calibration.seqlen", config["calibration"]["seqlen"]))
    else:
        registered = available_methods()
        for name, spec in config["methods"].items():
            method = registered.get(spec.get("method", name))
            if spec.get("kind", "library") == "library" and method.uses_calibration:
                seqlen = method.Config.from_params(spec.get("params")).seqlen
                lengths.append((f"config.methods.{name} calibration seqlen", seqlen))
    for name, spec in config["recovery"].items():
        if name != "none":
            lengths.append((f"config.recovery.{name}.seqlen", spec["seqlen"]))
    lengths += [("config.evaluation.ppl.seqlens", n) for n in config["evaluation"]["ppl"]["seqlens"]]
    latency = config["evaluation"]["latency"]
    if latency["enabled"]:
        longest = max(latency["prompt_lengths"]) + latency["new_tokens"]
        lengths.append(("config.evaluation.latency: longest prompt + new_tokens =", longest))
    return lengths


#: Recovery options the schema sets as keys of their own (the CLI flags of `prunebench recover`).
RECOVERY_KEYS = ("batch_size", "seqlen", "lr")


def _check_recovery_params(name: str, spec: dict[str, Any], problems: Problems) -> None:
    """``recovery.<name>.params`` must be options `RecoveryConfig` knows, with valid values."""
    from prunebench.recovery import RecoveryConfig
    from prunebench.recovery.variants import VARIANTS, check_parallel

    params = spec.get("params", {})
    where = f"config.recovery.{name}.params"
    taken = [key for key in RECOVERY_KEYS if key in params]
    for key in taken:
        problems.add(f"{where}.{key}", f"set it as config.recovery.{name}.{key}")
    if not taken:
        with problems.under(where):
            recovery = RecoveryConfig.from_params(params)
            if name in VARIANTS:
                check_parallel(recovery, VARIANTS[name])
