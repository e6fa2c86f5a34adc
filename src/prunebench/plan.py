"""Pruning plans: the small JSON document that says what a method keeps (format in docs/plan-format.md)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from prunebench.errors import PrunebenchError
from prunebench.io import atomic_write_text

if TYPE_CHECKING:
    from prunebench.models.adapter import ModelAdapter

PLAN_FORMAT = "prunebench-plan/1"
COMPENSATION_SUFFIX = ".compensation.safetensors"
COMPENSATED_PROJECTIONS = ("o_proj", "down_proj")
_TOP_KEYS = {
    "format",
    "base_model",
    "base_shapes",
    "base_fingerprint",
    "method",
    "params",
    "target_ratio",
    "layers",
    "achieved",
    "notes",
}
_LAYER_KEYS = {"kv_heads", "mlp_channels"}


@dataclass
class LayerPlan:
    """What one decoder layer keeps. ``None`` keeps a part whole; ``[]`` removes that sublayer."""

    kv_heads: list[int] | None = None
    mlp_channels: list[int] | None = None

    @property
    def removes_attention(self) -> bool:
        return self.kv_heads is not None and len(self.kv_heads) == 0

    @property
    def removes_mlp(self) -> bool:
        return self.mlp_channels is not None and len(self.mlp_channels) == 0

    @property
    def removes_layer(self) -> bool:
        return self.removes_attention and self.removes_mlp

    def to_json(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        if self.kv_heads is not None:
            out["kv_heads"] = list(self.kv_heads)
        if self.mlp_channels is not None:
            out["mlp_channels"] = list(self.mlp_channels)
        return out


@dataclass
class PruningPlan:
    """A method's decision for one model and one target ratio (see docs/plan-format.md)."""

    base_model: str
    method: str
    params: dict[str, Any]
    target_ratio: float
    layers: dict[int, LayerPlan]
    achieved: dict[str, float] | None = None
    compensation: dict[int, dict[str, torch.Tensor]] | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    #: The dense model's shapes and weight fingerprint (``prunebench.models.integrity``); optional.
    base_shapes: dict[str, Any] | None = None
    base_fingerprint: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "format": PLAN_FORMAT,
            "base_model": self.base_model,
            **({"base_shapes": self.base_shapes} if self.base_shapes is not None else {}),
            **({"base_fingerprint": self.base_fingerprint} if self.base_fingerprint is not None else {}),
            "method": self.method,
            "params": self.params,
            "target_ratio": self.target_ratio,
            "layers": {str(i): self.layers[i].to_json() for i in sorted(self.layers)},
        }
        if self.achieved is not None:
            doc["achieved"] = self.achieved
        if self.notes:
            doc["notes"] = self.notes
        return doc

    def save(self, path: str | os.PathLike) -> None:
        """Write ``plan.json`` (and the compensation biases beside it when there are any), atomically."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n")
        comp_path = compensation_path(path)
        if self.compensation:
            tensors = {
                f"{layer}.{name}": t.detach().to("cpu", torch.float32).contiguous()
                for layer, parts in self.compensation.items()
                for name, t in parts.items()
            }
            tmp = comp_path.with_name(comp_path.name + ".tmp")
            save_file(tensors, str(tmp))
            os.replace(tmp, comp_path)
        elif comp_path.exists():
            comp_path.unlink()

    @classmethod
    def load(cls, path: str | os.PathLike) -> PruningPlan:
        """Read and validate a plan file; anything malformed is a ``PrunebenchError``."""
        path = Path(path)
        if not path.is_file():
            raise PrunebenchError(f"plan file not found: {path}")
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise PrunebenchError(f"plan {path} is not valid JSON: {exc}") from None
        plan = cls.from_json(doc, source=str(path))
        comp_path = compensation_path(path)
        if comp_path.exists():
            plan.compensation = _read_compensation(comp_path)
        return plan

    @classmethod
    def from_json(cls, doc: Any, source: str = "plan") -> PruningPlan:
        if not isinstance(doc, dict):
            raise PrunebenchError(f"{source}: a plan must be a JSON object")
        if doc.get("format") != PLAN_FORMAT:
            raise PrunebenchError(f"{source}: 'format' must be {PLAN_FORMAT!r}, got {doc.get('format')!r}")
        unknown = set(doc) - _TOP_KEYS
        if unknown:
            raise PrunebenchError(f"{source}: unknown keys {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
        for key in ("base_model", "method"):
            if not isinstance(doc.get(key), str):
                raise PrunebenchError(f"{source}: '{key}' must be a string")
        ratio = doc.get("target_ratio")
        if not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
            raise PrunebenchError(f"{source}: 'target_ratio' must be a number in [0, 1), got {ratio!r}")
        for key in ("params", "base_shapes", "base_fingerprint"):
            if not isinstance(doc.get(key, {}), dict):
                raise PrunebenchError(f"{source}: '{key}' must be an object")
        layers_doc = doc.get("layers")
        if not isinstance(layers_doc, dict):
            raise PrunebenchError(f"{source}: 'layers' must be an object keyed by decoder-layer index")
        layers = {}
        for key, entry in layers_doc.items():
            if not key.isdigit():
                raise PrunebenchError(f"{source}: layer key {key!r} is not a decoder-layer index")
            if not isinstance(entry, dict) or set(entry) - _LAYER_KEYS:
                raise PrunebenchError(
                    f"{source}: layer {key} must be an object with keys among {sorted(_LAYER_KEYS)}"
                )
            layers[int(key)] = LayerPlan(
                kv_heads=_index_list(entry.get("kv_heads"), f"{source}: layer {key} kv_heads"),
                mlp_channels=_index_list(entry.get("mlp_channels"), f"{source}: layer {key} mlp_channels"),
            )
        return cls(
            base_model=doc["base_model"],
            method=doc["method"],
            params=dict(doc.get("params", {})),
            target_ratio=float(ratio),
            layers=layers,
            achieved=doc.get("achieved"),
            notes=dict(doc.get("notes", {})),
            base_shapes=doc.get("base_shapes"),
            base_fingerprint=doc.get("base_fingerprint"),
        )

    def validate(self, adapter: ModelAdapter, source: str = "the plan") -> None:
        """Check the plan against the dense model it is meant for; errors name the offending entry.

        Needs only the model's shapes (a skeleton on the meta device will do): the recorded dense
        shapes, layer and index ranges, compensation sizes, and that at least one decoder sublayer
        remains. ``source`` names the plan in messages.
        """
        from prunebench.models.integrity import check_shapes

        if not adapter.is_dense():
            raise PrunebenchError("a plan applies to the dense base model, but this model is already pruned")
        check_shapes(self.base_shapes, adapter.model, source)
        if self.base_shapes is None:
            self._check_recorded_counts(adapter, source)
        for layer, lp in self.layers.items():
            if layer >= adapter.num_layers:
                raise PrunebenchError(
                    f"plan names layer {layer} but the model has {adapter.num_layers} layers (0..{adapter.num_layers - 1})"
                )
            _check_indices(lp.kv_heads, adapter.num_kv_heads, f"layer {layer} kv_heads (KV heads)")
            _check_indices(lp.mlp_channels, adapter.intermediate_size, f"layer {layer} mlp_channels")
        for layer, parts in (self.compensation or {}).items():
            if layer >= adapter.num_layers:
                raise PrunebenchError(f"compensation names layer {layer} which does not exist")
            for name, t in parts.items():
                if name not in COMPENSATED_PROJECTIONS:
                    raise PrunebenchError(f"compensation for layer {layer} names unknown projection {name!r}")
                if tuple(t.shape) != (adapter.hidden_size,):
                    raise PrunebenchError(
                        f"compensation {layer}.{name} has shape {tuple(t.shape)}, expected ({adapter.hidden_size},)"
                    )
        if len(self.removed_sublayers()) == 2 * adapter.num_layers:
            raise PrunebenchError(
                f"the plan removes every decoder sublayer of the {adapter.num_layers}-layer model "
                f"(target ratio {self.target_ratio}); at least one attention or MLP sublayer must remain"
            )

    def _check_recorded_counts(self, adapter: ModelAdapter, source: str) -> None:
        """A plan without recorded shapes (older files) that was applied before must leave, on this
        model, the decoder parameter count it recorded then; otherwise it was made for another model."""
        from prunebench.models.counting import decoder_params, plan_decoder_ratio

        recorded = (self.achieved or {}).get("decoder_params")
        if not isinstance(recorded, int):
            return
        total = decoder_params(adapter.model)
        expected = total - round(plan_decoder_ratio(adapter, self) * total)
        if expected != recorded:
            raise PrunebenchError(
                f"{source}: made for another model (it left {recorded} decoder parameters on the model "
                f"it was applied to, and would leave {expected} of this model's {total})"
            )

    def removed_sublayers(self) -> list[tuple[int, str]]:
        """``(layer, "attn" | "mlp")`` for every sublayer the plan removes."""
        out = []
        for layer in sorted(self.layers):
            lp = self.layers[layer]
            if lp.removes_attention:
                out.append((layer, "attn"))
            if lp.removes_mlp:
                out.append((layer, "mlp"))
        return out


def compensation_path(plan_path: str | os.PathLike) -> Path:
    plan_path = Path(plan_path)
    return plan_path.with_name(plan_path.stem + COMPENSATION_SUFFIX)


def _read_compensation(path: Path) -> dict[int, dict[str, torch.Tensor]]:
    out: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in load_file(str(path)).items():
        layer, _, name = key.partition(".")
        if not layer.isdigit() or name not in COMPENSATED_PROJECTIONS:
            raise PrunebenchError(f"{path}: unexpected tensor {key!r}")
        out.setdefault(int(layer), {})[name] = tensor
    return out


def _index_list(value: Any, what: str) -> list[int] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise PrunebenchError(f"{what} must be a list of integers")
    return value


def _check_indices(indices: list[int] | None, size: int, what: str) -> None:
    if indices is None:
        return
    if any(i < 0 or i >= size for i in indices):
        bad = [i for i in indices if i < 0 or i >= size]
        raise PrunebenchError(f"{what}: indices {bad} do not exist (valid: 0..{size - 1})")
    if indices != sorted(set(indices)):
        raise PrunebenchError(f"{what}: indices must be sorted and unique")
