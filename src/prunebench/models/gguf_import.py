"""Import a GGUF file (llama.cpp's format) as an ordinary Hugging Face checkpoint with its provenance.

transformers reads GGUF Llama-family files through the ``gguf`` package and dequantizes every tensor
to float, but refuses to ``save_pretrained`` the result ("quantized with gguf ... not serializable").
:func:`import_gguf` therefore rebuilds the model from the same config without its
``quantization_config``, loads the dequantized state dict into it (every key must match) and writes a
float32 safetensors checkpoint, the tokenizer and ``provenance.json`` (source file and package,
sha256, quantization types, licence, library versions). Quantization noise stays in the weights: an
imported model is the quantized model, not the original float one.

``gguf`` is an optional dependency (``pip install 'prunebench[real-model]'``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import transformers

from prunebench import __version__
from prunebench.errors import PrunebenchError
from prunebench.io import OutputKind, atomic_directory, atomic_write_json, check_output

PROVENANCE_FILE = "provenance.json"
IMPORTED_MODEL = OutputKind("imported model", ("config.json", PROVENANCE_FILE))

#: GGUF ``general.architecture`` -> the transformers model type prunebench prunes. llama.cpp writes
#: Mistral models as ``llama`` (transformers tells them apart by the model name).
GGUF_FAMILIES = {"llama": "llama", "qwen2": "qwen2"}


def _gguf_module() -> Any:
    try:
        import gguf
    except ImportError:
        raise PrunebenchError(
            "importing a GGUF file needs the gguf package: pip install 'prunebench[real-model]'"
        ) from None
    return gguf


def _field(reader: Any, key: str) -> Any:
    """A scalar, string or list metadata value of a GGUF file, ``None`` when absent."""
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def read_gguf_header(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata an import checks and records, read without dequantizing anything.

    Returns ``architecture``, ``name``, ``license``, ``file_type`` and ``tensor_types`` (GGML type
    name -> number of tensors). Raises ``PrunebenchError`` for a missing, truncated or corrupt file, an
    architecture prunebench does not prune, or a tensor type the ``gguf`` package cannot dequantize.
    """
    gguf = _gguf_module()
    path = Path(path)
    if not path.is_file():
        raise PrunebenchError(f"GGUF file not found: {path}")
    try:
        reader = gguf.GGUFReader(path)
        tensors = list(reader.tensors)
        for tensor in tensors:  # a truncated file ends before the last tensor's data
            tensor.data[-1:].tobytes()
    except (ValueError, IndexError, KeyError, OSError, EOFError) as exc:
        raise PrunebenchError(f"{path} is not a readable GGUF file (truncated or corrupt?): {exc}") from None
    architecture = _field(reader, "general.architecture")
    if architecture not in GGUF_FAMILIES:
        raise PrunebenchError(
            f"{path}: GGUF architecture {architecture!r} is not supported; supported: "
            f"{', '.join(GGUF_FAMILIES)} (llama covers Llama 1/2/3 and Mistral)"
        )
    from gguf.quants import _type_traits

    readable = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, *_type_traits}
    for tensor in tensors:
        if tensor.tensor_type not in readable:
            raise PrunebenchError(
                f"{path}: tensor {tensor.name} has quantization type {tensor.tensor_type.name}, which the "
                f"installed gguf {gguf_version()} cannot dequantize"
            )
    return {
        "architecture": architecture,
        "name": _field(reader, "general.name"),
        "license": _field(reader, "general.license"),
        "file_type": _field(reader, "general.file_type"),
        "tensor_types": dict(sorted(Counter(t.tensor_type.name for t in tensors).items())),
    }


def gguf_config(path: str | os.PathLike) -> transformers.PretrainedConfig:
    """The transformers config that a GGUF file's header describes (shapes, context length), read
    without loading a tensor; an unreadable header is a ``PrunebenchError`` naming the file."""
    _gguf_module()
    path = Path(path)
    try:
        return transformers.AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    except (ValueError, RuntimeError, OSError, KeyError, IndexError) as exc:
        raise PrunebenchError(
            f"{path}: no model config in its GGUF header ({str(exc).splitlines()[0]})"
        ) from None


def gguf_version() -> str:
    return importlib.metadata.version("gguf")


def packaged_file(package: str, name: str) -> Path:
    """The file called ``name`` (a base name or a path inside the package) in installed distribution
    ``package``; a package that is not installed or lacks the file is a ``PrunebenchError``."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise PrunebenchError(
            f"package {package} is not installed (pip install --no-deps {package}; `make smollm2` does it)"
        ) from None
    matches = [f for f in dist.files or [] if str(f) == name or f.name == name]
    if not matches:
        raise PrunebenchError(f"package {package} {dist.version} has no file {name}")
    return Path(dist.locate_file(matches[0])).resolve()


def _package_provenance(package: str, file: Path) -> dict[str, Any]:
    dist = importlib.metadata.distribution(package)
    licence = dist.metadata.get("License") or dist.metadata.get("License-Expression")
    return {"name": dist.metadata["Name"], "version": dist.version, "license": licence, "file": file.name}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_dequantized(path: Path) -> tuple[torch.nn.Module, Any]:
    """The float32 model and tokenizer that transformers builds from the GGUF file, as a plain model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(path.parent), path.name
    try:
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except (ValueError, RuntimeError, OSError, KeyError) as exc:
        raise PrunebenchError(f"transformers cannot load {path}: {str(exc).splitlines()[0]}") from None
    config = loaded.config
    del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    model.tie_weights()
    return model.eval(), tokenizer


def import_gguf(
    gguf_file: str | os.PathLike, out_dir: str | os.PathLike, package: str | None = None
) -> dict[str, Any]:
    """Write ``gguf_file`` as a float32 Hugging Face checkpoint in ``out_dir``; returns the provenance.

    ``package``: the installed distribution the file comes from (recorded with its version and
    licence; ``gguf_file`` may then be a file name inside it). ``out_dir`` must not exist. Errors
    (``PrunebenchError``, before anything is written): missing or unreadable file, unsupported
    architecture or quantization type, an existing ``out_dir``, a package that is not installed.
    """
    path = (
        packaged_file(package, str(gguf_file))
        if package and not Path(gguf_file).exists()
        else Path(gguf_file)
    )
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise PrunebenchError(f"output directory {out_dir} exists; remove it or choose another --out")
    check_output(out_dir, IMPORTED_MODEL)  # never the working directory or a path under a file
    header = read_gguf_header(path)
    model, tokenizer = _load_dequantized(path)
    provenance = {
        "source": {
            "file": str(path),
            "sha256": _sha256(path),
            "size_bytes": path.stat().st_size,
            "package": _package_provenance(package, path) if package else None,
        },
        "gguf": header,
        "license": header["license"] or (_package_provenance(package, path)["license"] if package else None),
        "dequantized_to": "float32",
        "model_type": model.config.model_type,
        "versions": {
            "prunebench": __version__,
            "gguf": gguf_version(),
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
    }
    with atomic_directory(out_dir, IMPORTED_MODEL) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / PROVENANCE_FILE, provenance)
    return provenance
