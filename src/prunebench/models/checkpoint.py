"""Pruned checkpoints: one writer and one loader for dense and physically pruned models."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)

from prunebench.errors import PrunebenchError
from prunebench.io import OutputKind, atomic_directory
from prunebench.models import modeling_prunebench
from prunebench.models.adapter import SUPPORTED_FAMILIES, get_adapter
from prunebench.models.device import check_device, check_gpus
from prunebench.models.files import check_weights, read_config
from prunebench.models.hub import check_hub_model
from prunebench.models.integrity import check_finite_weights
from prunebench.models.modeling_prunebench import LAYER_SPEC_KEY, PRUNED_CLASSES
from prunebench.models.surgery import sync_config
from prunebench.plan import PruningPlan
from prunebench.revisions import model_revision

MODELING_FILE = "modeling_prunebench.py"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
#: Any Hugging Face model directory; a pruned checkpoint also holds the plan it was pruned by.
MODEL_DIRECTORY = OutputKind("model directory", ("config.json",))
PRUNED_CHECKPOINT = OutputKind("pruned checkpoint", ("config.json", "plan.json"))


def save_pretrained(
    model: nn.Module,
    out_dir: str | os.PathLike,
    tokenizer: PreTrainedTokenizerBase | None = None,
    plan: PruningPlan | None = None,
) -> Path:
    """Write ``model`` (dense or pruned) as a Hugging Face directory, atomically.

    Irregular shapes are recorded in ``config.prunebench_layers`` and the modelling file is copied
    beside the weights with an ``auto_map``, so ``AutoModelForCausalLM.from_pretrained(dir,
    trust_remote_code=True)`` loads it. A model that only lost whole layers is a plain checkpoint.
    ``out_dir`` must be absent, empty or a model directory; anything else is a ``PrunebenchError``.
    """
    adapter = get_adapter(model)
    sync_config(model)
    config = adapter.config
    irregular = hasattr(config, LAYER_SPEC_KEY)
    if irregular:
        pruned_class = PRUNED_CLASSES[adapter.family]
        config.auto_map = {"AutoModelForCausalLM": f"{Path(MODELING_FILE).stem}.{pruned_class.__name__}"}
        config.architectures = [pruned_class.__name__]
    else:
        if hasattr(config, "auto_map"):
            delattr(config, "auto_map")
        config.architectures = [_family_class_name(model)]
    out_dir = Path(out_dir)
    with atomic_directory(out_dir, MODEL_DIRECTORY) as tmp:
        model.save_pretrained(tmp)
        if irregular:
            shutil.copyfile(modeling_prunebench.__file__, tmp / MODELING_FILE)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if plan is not None:
            plan.save(tmp / "plan.json")
    return out_dir


def _family_class_name(model: nn.Module) -> str:
    """The transformers class a regular model is saved as (never a Prunebench* subclass)."""
    return next(
        cls.__name__
        for cls in type(model).__mro__
        if cls.__name__.endswith("ForCausalLM") and not cls.__name__.startswith("Prunebench")
    )


def _model_class(name_or_path: str | os.PathLike) -> type:
    """The class that loads ``name_or_path``, after checking a local directory's config, family and
    weights' headers (:func:`check_weights`) or, for a name that is no local path, the Hub
    (:func:`check_hub_model`); a bad path, bad files or an unsupported family is a ``PrunebenchError``."""
    path = Path(name_or_path)
    if not path.exists():
        check_hub_model(str(name_or_path))
        return AutoModelForCausalLM
    if not path.is_dir():
        raise PrunebenchError(f"model path {path} is not a directory")
    config = read_config(path)
    family = config.get("model_type")
    if family not in SUPPORTED_FAMILIES:
        raise PrunebenchError(
            f"{path}: model type {family!r} is not supported; supported families: {', '.join(SUPPORTED_FAMILIES)}"
        )
    check_weights(path)
    return PRUNED_CLASSES[family] if LAYER_SPEC_KEY in config else AutoModelForCausalLM


def pinned(name_or_path: str | os.PathLike) -> dict[str, str]:
    """``{"revision": ...}`` when the study pins Hub model ``name_or_path`` (:mod:`prunebench.revisions`)."""
    revision = model_revision(str(name_or_path))
    return {"revision": revision} if revision else {}


def load_config(name_or_path: str | os.PathLike) -> PretrainedConfig:
    """The model's config alone (no weights); a bad path or unsupported family is a ``PrunebenchError``."""
    _model_class(name_or_path)
    try:
        return AutoConfig.from_pretrained(str(name_or_path), **pinned(name_or_path))
    except (OSError, ValueError) as exc:
        raise PrunebenchError(
            f"cannot load the config of {name_or_path}: {str(exc).splitlines()[0]}"
        ) from None


def load_skeleton(name_or_path: str | os.PathLike) -> nn.Module:
    """The model's modules on the meta device (shapes only, no weights): cheap checks before loading."""
    model_class = _model_class(name_or_path)
    return skeleton_of(load_config(name_or_path), model_class)


def skeleton_of(config: PretrainedConfig, model_class: type = AutoModelForCausalLM) -> nn.Module:
    """The modules that ``config`` describes, on the meta device; an unsupported family is an error."""
    with torch.device("meta"):
        if model_class is AutoModelForCausalLM:
            model = AutoModelForCausalLM.from_config(config)
        else:
            model = model_class(config)
    get_adapter(model)
    return model


def load_pretrained(
    name_or_path: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    gpus: int = 1,
    gpu_memory: int | None = None,
) -> tuple[nn.Module, PreTrainedTokenizerBase | None]:
    """Load a dense or pruned causal LM and its tokenizer (``None`` when the directory has none).

    ``gpus > 1`` splits the model layer-wise over CUDA devices 0..gpus-1 with accelerate
    (``device_map="auto"``), at most ``gpu_memory`` bytes on each when given; inputs then go to the
    first device (``cuda:0``) and accelerate's hooks move the states between devices.

    Checked first: the device (valid and here), a local directory's files (config, safetensors
    headers against the file sizes; pickled weights refused) and family, or, for a name of the form
    ``owner/model`` that is no local path, the Hub (cache or one quick request). Then tensors that
    disagree with the config or hold a NaN or inf (the first such tensor is named). Each problem is a
    ``PrunebenchError``; only safetensors weights are ever read.
    """
    check_device(str(device))
    check_gpus(str(device), gpus)
    model_class = _model_class(name_or_path)
    split = {}
    if gpus > 1:
        memory = {i: gpu_memory or torch.cuda.get_device_properties(i).total_memory for i in range(gpus)}
        split = {"device_map": "auto", "max_memory": memory}
    try:
        model = model_class.from_pretrained(
            str(name_or_path), dtype=dtype, use_safetensors=True, **pinned(name_or_path), **split
        )
    except (RuntimeError, ValueError, OSError) as exc:
        raise PrunebenchError(f"cannot load model {name_or_path}: {str(exc).splitlines()[0]}") from None
    get_adapter(model)
    check_finite_weights(model, str(name_or_path))
    if not split:
        model.to(device)
    model.eval()
    return model, load_tokenizer(name_or_path)


def load_tokenizer(name_or_path: str | os.PathLike) -> PreTrainedTokenizerBase | None:
    """The tokenizer of a model directory or Hub id, ``None`` when a local directory has none;
    one that cannot be parsed is a ``PrunebenchError``. Cheap: no weights are read."""
    path = Path(name_or_path)
    has_tokenizer = not path.exists() or any((path / f).exists() for f in _TOKENIZER_FILES)
    return _load_tokenizer(name_or_path) if has_tokenizer else None


def _load_tokenizer(name_or_path: str | os.PathLike) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(str(name_or_path), **pinned(name_or_path))
    except Exception as exc:  # tokenizers' own parse errors are bare Exceptions
        raise PrunebenchError(
            f"cannot load the tokenizer of {name_or_path}: {str(exc).splitlines()[0] if str(exc) else exc!r}"
        ) from None
