"""Is a model, and what was measured on it, what it claims to be: finite weights, shapes, fingerprint.

Scores and plans are made for one dense model. They record its shapes (:func:`dense_shapes`, from the
config alone) and a weight fingerprint (:func:`fingerprint`), and whoever uses them on a model checks
both (:func:`check_shapes` before the weights are loaded, :func:`check_fingerprint` after).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.models.adapter import get_adapter

#: Values sampled from each fingerprinted tensor (evenly spaced over its flattened elements).
FINGERPRINT_SAMPLES = 4096
SHAPE_KEYS = (
    "family",
    "num_layers",
    "hidden_size",
    "num_heads",
    "num_kv_heads",
    "head_dim",
    "intermediate_size",
    "vocab_size",
)


def check_finite_weights(model: nn.Module, source: str) -> None:
    """Raise ``PrunebenchError`` naming the first parameter or buffer of ``model`` with a NaN or inf.

    One pass over the floating-point tensors already in memory: one min/max reduction each (a NaN
    propagates to both, an inf shows in one), no temporary of the tensor's size.
    """
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if (
            tensor.is_floating_point()
            and tensor.numel()
            and tensor.device.type != "meta"
            and not _finite(tensor)
        ):
            nan = int(tensor.isnan().sum())
            inf = int(tensor.isinf().sum())
            raise PrunebenchError(
                f"model {source}: weight {name} {tuple(tensor.shape)} holds non-finite values "
                f"({nan} NaN, {inf} inf); the checkpoint is corrupt"
            )


def _finite(tensor: torch.Tensor) -> bool:
    low, high = torch.aminmax(tensor.detach())
    return bool(low.isfinite() & high.isfinite())


def dense_shapes(model: nn.Module) -> dict[str, Any]:
    """The dense model's family and shapes (``SHAPE_KEYS``), read from its config: works on a skeleton."""
    adapter = get_adapter(model)
    return {
        "family": adapter.family,
        "num_layers": int(adapter.config.num_hidden_layers),
        "hidden_size": adapter.hidden_size,
        "num_heads": adapter.num_heads,
        "num_kv_heads": adapter.num_kv_heads,
        "head_dim": adapter.head_dim,
        "intermediate_size": adapter.intermediate_size,
        "vocab_size": int(adapter.config.vocab_size),
    }


def _fingerprinted(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    adapter = get_adapter(model)
    first, last = adapter.layers[0], adapter.layers[adapter.num_layers - 1]
    tensors = (
        adapter.embed_tokens.weight,
        first.self_attn.q_proj.weight,
        last.mlp.down_proj.weight,
        adapter.final_norm.weight,
    )
    return list(zip(fingerprint_names(adapter.num_layers), tensors, strict=True))


def sample_positions(numel: int, samples: int) -> torch.Tensor:
    """``min(numel, samples)`` evenly spaced positions in ``[0, numel)``, first and last included.

    Integer arithmetic: a float32 ``linspace`` rounds past the last position of a tensor with more
    than 2**24 elements (an embedding of 49,152 × 576, say).
    """
    count = min(numel, samples)
    return torch.arange(count, dtype=torch.long) * (numel - 1) // max(count - 1, 1)


def fingerprint(model: nn.Module) -> dict[str, str]:
    """A cheap, deterministic fingerprint of a dense model's weights: ``{"sha256": hex, "dtype": name}``.

    SHA-256 over the name, shape and ``FINGERPRINT_SAMPLES`` evenly spaced values (as float32) of four
    tensors: the token embedding, layer 0's ``q_proj``, the last layer's ``down_proj`` and the final
    norm. Device-independent; it reads about 64 KiB whatever the model size.

    What it guarantees: two fingerprints taken in the same dtype differ whenever those sampled values
    differ, so two independently trained or initialised models, or two fine-tunes of all weights, are
    told apart. It does not see changes confined to other tensors or to unsampled positions. Taken in
    different dtypes the values are rounded differently, so :func:`check_fingerprint` compares
    fingerprints only when their dtypes are equal.
    """
    tensors = _fingerprinted(model)
    samples = []
    for name, tensor in tensors:
        flat = tensor.detach().reshape(-1)
        index = sample_positions(flat.numel(), FINGERPRINT_SAMPLES)
        samples.append((name, tuple(tensor.shape), flat[index.to(flat.device)]))
    return fingerprint_of(samples, tensors[0][1].dtype)


def fingerprint_names(num_layers: int) -> dict[str, str]:
    """The checkpoint names of the tensors :func:`fingerprint` samples, by their fingerprint name."""
    return {
        "embed_tokens": "model.embed_tokens.weight",
        "layers.0.q_proj": "model.layers.0.self_attn.q_proj.weight",
        f"layers.{num_layers - 1}.down_proj": f"model.layers.{num_layers - 1}.mlp.down_proj.weight",
        "norm": "model.norm.weight",
    }


def fingerprint_of(
    samples: list[tuple[str, tuple[int, ...], torch.Tensor]], dtype: torch.dtype
) -> dict[str, str]:
    """:func:`fingerprint` from ``(name, shape, sampled values)`` of its four tensors, taken in ``dtype``
    (for a model read tensor by tensor, :class:`~prunebench.models.streaming.SafetensorsLayers`)."""
    digest = hashlib.sha256()
    for name, shape, values in samples:
        digest.update(f"{name}:{shape}:".encode())
        digest.update(values.to("cpu", torch.float32).numpy().tobytes())
    return {"sha256": digest.hexdigest(), "dtype": str(dtype).removeprefix("torch.")}


def check_shapes(recorded: dict[str, Any] | None, model: nn.Module, what: str) -> None:
    """Refuse ``what`` (scores, a plan) whose recorded dense shapes differ from ``model``'s config.

    ``recorded`` is ``None`` for files written before shapes were recorded: nothing to compare.
    """
    check_same_model(recorded, None, dense_shapes(model), None, what)


def check_fingerprint(recorded: dict[str, str] | None, model: nn.Module, what: str) -> None:
    """Refuse ``what`` whose recorded weight fingerprint differs from ``model``'s (same dtype only)."""
    if recorded is not None:
        check_same_model(None, recorded, None, fingerprint(model), what)


def check_same_model(
    recorded_shapes: dict[str, Any] | None,
    recorded_fingerprint: dict[str, str] | None,
    shapes: dict[str, Any] | None,
    weights: dict[str, str] | None,
    what: str,
) -> None:
    """Refuse ``what`` when its recorded shapes or fingerprint differ from the model's ``shapes`` and
    ``weights`` fingerprint. Whatever is missing on either side is not compared, and fingerprints only
    when taken in the same dtype."""
    if recorded_shapes is not None and shapes is not None:
        differ = [
            f"{k} {recorded_shapes.get(k)} vs {shapes.get(k)}"
            for k in SHAPE_KEYS
            if recorded_shapes.get(k) != shapes.get(k)
        ]
        if differ:
            raise PrunebenchError(
                f"{what}: made for another model ({', '.join(differ)}; recorded vs this model)"
            )
    if recorded_fingerprint is None or weights is None:
        return
    if recorded_fingerprint.get("dtype") == weights.get("dtype") and recorded_fingerprint.get(
        "sha256"
    ) != weights.get("sha256"):
        raise PrunebenchError(
            f"{what}: made for a model with other weights (fingerprint {str(recorded_fingerprint.get('sha256'))[:12]} "
            f"recorded, {str(weights.get('sha256'))[:12]} for this model)"
        )
