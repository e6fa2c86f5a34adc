"""What a local model directory must hold before anything loads it: a readable config.json and
safetensors weights whose headers match the files (pickled weights are refused: unpickling a file can
run code). Read in milliseconds, so every loader and the study's config check call it first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prunebench.errors import PrunebenchError
from prunebench.files import safetensors_header

WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
#: File names of weights saved with pickle (torch.save), which prunebench never loads.
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def read_config(path: Path) -> dict[str, Any]:
    """The parsed ``config.json`` of model directory ``path``."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise PrunebenchError(f"{path} has no config.json: not a Hugging Face model directory")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PrunebenchError(f"{config_file} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise PrunebenchError(f"{config_file} is not a JSON object")
    return config


def weight_files(path: Path) -> list[Path]:
    """The safetensors files of model directory ``path``: ``model.safetensors`` or the shards its index
    names. A directory with only pickled weights, with none, or with a shard missing is an error."""
    index = path / WEIGHTS_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
            raise PrunebenchError(f"{index} is not a safetensors index (a JSON weight_map)") from None
        missing = [name for name in shards if not (path / name).is_file()]
        if missing:
            raise PrunebenchError(f"{index} names {len(missing)} missing shard(s): {', '.join(missing[:3])}")
        return [path / name for name in shards]
    if (path / WEIGHTS_FILE).is_file():
        return [path / WEIGHTS_FILE]
    pickles = sorted(p.name for pattern in PICKLE_PATTERNS for p in path.glob(pattern))
    if pickles:
        raise PrunebenchError(
            f"{path} holds its weights only as pickles ({', '.join(pickles[:3])}); prunebench reads "
            f"safetensors only ({WEIGHTS_FILE}), since unpickling a file can run code: convert the "
            "checkpoint to safetensors where you trust its source"
        )
    raise PrunebenchError(f"{path} has no weights: neither {WEIGHTS_FILE} nor {WEIGHTS_INDEX}")


def check_weights(path: Path) -> None:
    """The safetensors weights of model directory ``path`` are there and their headers match the
    files' sizes; the first problem is a ``PrunebenchError`` naming the file."""
    for file in weight_files(path):
        safetensors_header(file)
