"""Calibration passes over the decoder, whole-model or one layer at a time (layer streaming).

A method that collects per-layer statistics describes *what* it collects as a :class:`LayerProbe`;
a runner decides *how* the calibration rows go through the decoder:

- :class:`ResidentRunner`: the dense model is in memory; one forward pass of the whole model per
  batch with the probe's hooks on every layer (the methods' reference behaviour).
- :class:`StreamingRunner`: the weights stay on the CPU (:class:`ResidentLayers`) or on disk
  (:class:`SafetensorsLayers`, read tensor by tensor with ``safetensors.safe_open``, never all
  materialised); one decoder layer at a time is put on the compute device and applied to every
  calibration batch, and the residual stream is carried to the next layer. The states stay on the
  device up to a memory budget; the batches beyond it wait in CPU memory (pinned on CUDA).

Each layer sees exactly the arguments the whole model would give it (mask, positions, rotary
embeddings, captured from the model's own forward), batch by batch in the same order, so the
statistics, and every decision made from them, are the same bit for bit; the tests compare both
runners on tiny models of every family.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import functools
import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn
from torch.utils.hooks import RemovableHandle
from tqdm.auto import tqdm

from prunebench.errors import PrunebenchError
from prunebench.models.adapter import get_adapter
from prunebench.models.files import WEIGHTS_FILE, WEIGHTS_INDEX, weight_files
from prunebench.models.integrity import (
    FINGERPRINT_SAMPLES,
    fingerprint_names,
    fingerprint_of,
    sample_positions,
)

LayerHooks = Callable[[int, nn.Module], list[RemovableHandle]]
#: The modules of a decoder layer by sublayer (``None``: the whole layer).
PARTS = {
    "attention": ("input_layernorm", "self_attn"),
    "mlp": ("post_attention_layernorm", "mlp"),
    None: ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp"),
}


def _no_hooks(_index: int, _layer: nn.Module) -> list[RemovableHandle]:
    return []


def _nothing(_index: int, _layer: nn.Module) -> None:
    return None


@dataclass
class LayerProbe:
    """What a method collects from each decoder layer during a calibration pass.

    - ``attach(index, layer)``: hooks on the resident layer's modules (forward pre-hooks on
      ``o_proj``, say), returned so that the runner removes them.
    - ``on_output(index, inputs, outputs)``: the residual stream entering and leaving the layer,
      ``[batch, seqlen, hidden]`` each, once per calibration batch in batch order.
    - ``finish_attention(index, layer)``: called once the layer's attention sublayer has seen every
      batch, with the attention weights resident (weight-based metrics of the attention).
    - ``finish(index, layer)``: called once the layer has seen every batch, with the MLP weights
      resident; a source that streams sublayers (:class:`SafetensorsLayers`) has already released the
      attention weights by then.
    - ``carry(index, layer)``: when given, the module whose outputs go on to the next layer instead of
      the layer's own (Wanda-sp's sequential pass: the pruned layer). Streaming runner only.
    """

    attach: LayerHooks = _no_hooks
    on_output: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None
    finish_attention: Callable[[int, nn.Module], None] = _nothing
    finish: Callable[[int, nn.Module], None] = _nothing
    carry: Callable[[int, nn.Module], nn.Module] | None = None


def hidden_of(output: Any) -> torch.Tensor:
    """The residual stream a decoder layer returns (a tensor, or the first item of a tuple)."""
    return output[0] if isinstance(output, tuple) else output


def progress(iterable: Any, desc: str, total: int | None = None, unit: str = "it") -> Any:
    """A tqdm bar on stderr (so a job's log shows how far a calibration pass has gone)."""
    return tqdm(iterable, desc=desc, total=total, unit=unit, mininterval=1.0)


class Runner(Protocol):
    """A calibration pass over the decoder; ``model`` gives the dense shapes (a skeleton when streaming)."""

    model: nn.Module
    device: torch.device

    def run(self, calibration: torch.Tensor, batch_size: int, probe: LayerProbe, desc: str) -> None: ...

    def scan(self, probe: LayerProbe, desc: str) -> None: ...


class ResidentRunner:
    """The whole dense model in memory: per batch, one forward pass of the model with the probe on
    every layer (hooks attached before, ``finish`` called on every layer after the last batch)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.device = get_adapter(model).embed_tokens.weight.device

    def run(self, calibration: torch.Tensor, batch_size: int, probe: LayerProbe, desc: str) -> None:
        """Forward ``calibration`` (``[nsamples, seqlen]`` token ids) in batches of ``batch_size`` rows."""
        if probe.carry is not None:
            raise ValueError("a probe that replaces a layer's outputs needs the streaming runner")
        layers = get_adapter(self.model).layers
        handles: list[RemovableHandle] = []
        try:
            for index, layer in enumerate(layers):
                handles += probe.attach(index, layer)
                if probe.on_output is not None:
                    handles.append(
                        layer.register_forward_hook(_io_hook(index, probe.on_output), with_kwargs=True)
                    )
            batches = calibration.split(batch_size)
            with torch.no_grad():
                for batch in progress(batches, desc, unit="batch"):
                    self.model.model(input_ids=batch.to(self.device), use_cache=False)
        finally:
            for handle in handles:
                handle.remove()
        for index, layer in enumerate(layers):
            probe.finish_attention(index, layer)
            probe.finish(index, layer)

    def scan(self, probe: LayerProbe, desc: str) -> None:
        """The probe's ``finish_attention`` and ``finish`` on every decoder layer (weight-only statistics)."""
        layers = get_adapter(self.model).layers
        for index in progress(range(len(layers)), desc, unit="layer"):
            probe.finish_attention(index, layers[index])
            probe.finish(index, layers[index])


def _io_hook(index: int, on_output: Callable[[int, torch.Tensor, torch.Tensor], None]):
    def hook(_module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        on_output(index, args[0] if args else kwargs["hidden_states"], hidden_of(output))

    return hook


class LayerSource(Protocol):
    """Where a streaming runner gets the decoder from, one layer at a time."""

    #: The model's modules for shapes and the family (weights may be on the meta device).
    model: nn.Module
    #: Whether :meth:`load` can bring one sublayer (``"attention"`` or ``"mlp"``) at a time.
    sublayers: bool

    def layer_inputs(self, input_ids: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, dict]:
        """The hidden state entering layer 0 and the keyword arguments every layer gets, for one batch."""
        ...

    def load(self, index: int, device: torch.device, part: str | None = None) -> nn.Module:
        """Decoder layer ``index`` with its weights (only ``part``'s, when given) on ``device``."""
        ...

    def release(self, index: int, layer: nn.Module, part: str | None = None) -> None:
        """Give back the memory of what :meth:`load` brought."""
        ...

    def layer_bytes(self, index: int) -> int:
        """Bytes of layer ``index``'s weights in the compute dtype."""
        ...

    def final_modules(self, device: torch.device) -> tuple[nn.Module, nn.Module]:
        """The final norm and the LM head on ``device`` (for a search that needs the logits)."""
        ...


class _Captured(Exception):
    """Stops a forward pass once the first decoder layer's call is captured."""


def capture_first_call(decoder: nn.Module, first_layer: nn.Module, input_ids: torch.Tensor) -> tuple:
    """``(hidden, kwargs)`` that ``decoder`` (``model.model``) passes to its first layer for ``input_ids``.

    The forward stops before the layer runs, so the layer may be a skeleton on the meta device.
    """
    captured: list[tuple[torch.Tensor, dict]] = []

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        kwargs = dict(kwargs)
        hidden = args[0] if args else kwargs.pop("hidden_states")
        captured.append((hidden, kwargs))
        raise _Captured

    handle = first_layer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad(), contextlib.suppress(_Captured):
            decoder(input_ids=input_ids, use_cache=False)
    finally:
        handle.remove()
    return captured[0]


def _param_bytes(module: nn.Module, dtype: torch.dtype | None = None) -> int:
    return sum(p.numel() * (dtype or p.dtype).itemsize for p in module.parameters())


class ResidentLayers:
    """A loaded model's layers (typically on the CPU), moved to the compute device one at a time."""

    sublayers = False

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._adapter = get_adapter(model)
        self._home = self._adapter.embed_tokens.weight.device

    def layer_inputs(self, input_ids: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, dict]:
        hidden, kwargs = capture_first_call(
            self.model.model, self._adapter.layers[0], input_ids.to(self._home)
        )
        return hidden.to(device), _to_device(kwargs, device)

    def load(self, index: int, device: torch.device, part: str | None = None) -> nn.Module:
        return self._adapter.layers[index].to(device)

    def release(self, index: int, layer: nn.Module, part: str | None = None) -> None:
        layer.to(self._home)

    def layer_bytes(self, index: int) -> int:
        return _param_bytes(self._adapter.layers[index])

    def final_modules(self, device: torch.device) -> tuple[nn.Module, nn.Module]:
        """Copies of the final norm and the LM head on ``device`` (the model's own stay where they are)."""
        norm, head = (copy.deepcopy(m).to(device) for m in (self._adapter.final_norm, self._adapter.lm_head))
        return norm, head


def _to_device(value: Any, device: torch.device) -> Any:
    """Tensors inside ``value`` (nested tuples, lists, dicts) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple | list):
        return type(value)(_to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


class _RowEmbedding(nn.Module):
    """The rows of an embedding matrix that a calibration set uses, looked up by original token id."""

    def __init__(self, ids: torch.Tensor, rows: torch.Tensor, vocab_size: int) -> None:
        super().__init__()
        self.rows = rows
        self.remap = torch.full((vocab_size,), -1, dtype=torch.long, device=rows.device)
        self.remap[ids.to(rows.device)] = torch.arange(len(ids), device=rows.device)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(self.remap[input_ids], self.rows)


class SafetensorsLayers:
    """A dense model read lazily from its safetensors files: only one decoder layer's weights (and the
    embedding rows the calibration tokens use) are ever in memory.

    Each tensor is read with its own ``safe_open`` (the file mapping is closed again at once, so no
    mapped pages of other tensors stay resident), cast to ``dtype`` as ``from_pretrained`` casts it, and
    checked finite (a NaN or inf is a ``PrunebenchError`` naming the tensor); freed blocks go back to
    the system at once (:func:`fix_mmap_threshold`). ``model`` is the skeleton
    (meta device) the layers are built from. A layer can come one sublayer at a time (:data:`PARTS`),
    so that at most the larger of its two sublayers (the MLP: two thirds of a Llama layer) is resident.
    """

    sublayers = True

    def __init__(self, path: str | Path, dtype: torch.dtype = torch.float32) -> None:
        from prunebench.models.checkpoint import load_skeleton

        fix_mmap_threshold()
        self.path = Path(path)
        self.dtype = dtype
        self.model = load_skeleton(self.path)
        self._adapter = get_adapter(self.model)
        self._files = _tensor_files(self.path)

    def read(self, name: str, rows: Sequence[int] | None = None) -> torch.Tensor:
        """Tensor ``name`` of the checkpoint (only ``rows`` of its first dimension when given), as ``dtype``."""
        file = self._files.get(name)
        if file is None:
            raise PrunebenchError(f"{self.path}: the weights hold no tensor {name!r}")
        if rows is None:
            tensor = _read_in_blocks(file, name)
        else:
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                view = handle.get_slice(name)
                tensor = torch.cat([view[row : row + 1] for row in rows])
        tensor = tensor.to(self.dtype) if tensor.is_floating_point() else tensor
        if tensor.is_floating_point() and tensor.numel():
            low, high = torch.aminmax(tensor)
            if not bool(low.isfinite() & high.isfinite()):
                raise PrunebenchError(
                    f"model {self.path}: weight {name} {tuple(tensor.shape)} holds non-finite values "
                    f"({int(tensor.isnan().sum())} NaN, {int(tensor.isinf().sum())} inf); the checkpoint is corrupt"
                )
        return tensor

    def layer_inputs(self, input_ids: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, dict]:
        decoder = self.model.model
        ids = torch.unique(input_ids.cpu())
        rows = self.read("model.embed_tokens.weight", ids.tolist()).to(device)
        embed, rotary = decoder.embed_tokens, decoder.rotary_emb
        with torch.device(device):
            real_rotary = type(rotary)(config=self.model.config)
        try:
            decoder.embed_tokens = _RowEmbedding(ids, rows, self._adapter.config.vocab_size)
            decoder.rotary_emb = real_rotary
            return capture_first_call(decoder, self._adapter.layers[0], input_ids.to(device))
        finally:
            decoder.embed_tokens, decoder.rotary_emb = embed, rotary

    def load(self, index: int, device: torch.device, part: str | None = None) -> nn.Module:
        layer = self._adapter.layers[index]
        for module in PARTS.get(part, PARTS[None]):
            prefix = f"model.layers.{index}.{module}."
            sub = layer.get_submodule(module)
            state = {name: self.read(prefix + name).to(device) for name, _ in sub.named_parameters()}
            sub.load_state_dict(state, assign=True, strict=True)
        return layer

    def release(self, index: int, layer: nn.Module, part: str | None = None) -> None:
        for module in PARTS.get(part, PARTS[None]):
            layer.get_submodule(module).to("meta")

    def layer_bytes(self, index: int) -> int:
        return _param_bytes(self._adapter.layers[index], self.dtype)

    def fingerprint(self) -> dict[str, str]:
        """:func:`~prunebench.models.integrity.fingerprint` of the model, reading only the sampled rows
        of the embedding and the three other tensors it samples."""
        samples = []
        for key, name in fingerprint_names(self._adapter.num_layers).items():
            shape = tuple(self.model.get_parameter(name).shape)
            numel = math.prod(shape)
            index = sample_positions(numel, FINGERPRINT_SAMPLES)
            if name == "model.embed_tokens.weight":
                rows, place = torch.unique(index // shape[1], return_inverse=True)
                values = self.read(name, rows.tolist())[place, index % shape[1]]
            else:
                values = self.read(name).reshape(-1)[index]
            samples.append((key, shape, values))
        return fingerprint_of(samples, self.dtype)

    def final_modules(self, device: torch.device) -> tuple[nn.Module, nn.Module]:
        """The final norm and the LM head (tied to the embedding where the config says so), on ``device``."""
        norm = copy.deepcopy(self._adapter.final_norm)
        norm.load_state_dict({"weight": self.read("model.norm.weight").to(device)}, assign=True)
        head = copy.deepcopy(self._adapter.lm_head)
        name = "model.embed_tokens.weight" if self._adapter.tied_embeddings else "lm_head.weight"
        head.load_state_dict({"weight": self.read(name).to(device)}, assign=True, strict=False)
        return norm, head


#: glibc's ``mallopt`` parameter number of ``M_MMAP_THRESHOLD`` (malloc.h).
M_MMAP_THRESHOLD = -3
#: Allocations from this size on get their own mapping, returned to the system when freed.
MMAP_THRESHOLD = 2**20


@functools.cache
def fix_mmap_threshold() -> bool:
    """Give every allocation of 1 MiB or more its own memory mapping (glibc ``mallopt``; once per
    process; False where the C library is not glibc).

    glibc's default threshold adapts upwards to 32 MiB after the first large free, and the many freed
    blocks below it (weight read blocks, metric temporaries) then stay in the heap, fragmented: on a
    7B-shaped model CFSP's streamed pass peaked at 920 MiB of resident memory instead of 735 MiB. A
    fixed threshold (the same as ``MALLOC_MMAP_THRESHOLD_=1048576``) hands such blocks back when freed.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


#: Bytes read per ``safe_open`` in :func:`_read_in_blocks`.
READ_BLOCK = 16 * 2**20


def _read_in_blocks(file: Path, name: str) -> torch.Tensor:
    """Tensor ``name`` of ``file``, read a block of rows at a time, each through its own ``safe_open``.

    The file is memory-mapped while a block is copied out; closing it after each block keeps the mapped
    pages (which count as resident memory) to one block instead of the whole tensor.
    """
    with safe_open(str(file), framework="pt", device="cpu") as handle:
        view = handle.get_slice(name)
        shape = view.get_shape()
        first = view[0:1] if shape and shape[0] else handle.get_tensor(name)
    if not shape or not shape[0] or len(shape) == 1:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            return handle.get_tensor(name)
    out = torch.empty(shape, dtype=first.dtype)
    step = max(1, READ_BLOCK // max(first.numel() * first.element_size(), 1))
    for start in range(0, shape[0], step):
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            out[start : start + step] = handle.get_slice(name)[start : start + step]
    return out


def _tensor_files(path: Path) -> dict[str, Path]:
    """Tensor name -> safetensors file, for a single file or an indexed set of shards."""
    files = weight_files(path)
    if (path / WEIGHTS_INDEX).is_file():
        weight_map = json.loads((path / WEIGHTS_INDEX).read_text(encoding="utf-8"))["weight_map"]
        return {name: path / shard for name, shard in weight_map.items()}
    assert files == [path / WEIGHTS_FILE]
    with safe_open(str(files[0]), framework="pt", device="cpu") as handle:
        return {name: files[0] for name in handle.keys()}  # noqa: SIM118 (safe_open is no dict)


class HiddenStates:
    """One residual-stream tensor per calibration batch, on the device up to ``room`` bytes and in CPU
    memory (pinned on CUDA) beyond; which batch lives where is fixed once, in batch order, from the
    batches' sizes (every layer's states have the same shapes)."""

    def __init__(self, device: torch.device, room: int | None, sizes: Sequence[int]) -> None:
        self.device = device
        self.on_device: list[bool] = []
        used = 0
        for size in sizes:
            keep = room is None or used + size <= room
            used += size if keep else 0
            self.on_device.append(keep)
        self.states: list[torch.Tensor | None] = [None] * len(sizes)

    def __len__(self) -> int:
        return len(self.states)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.states[index].to(self.device, non_blocking=True)

    def __setitem__(self, index: int, hidden: torch.Tensor) -> None:
        if self.on_device[index]:
            self.states[index] = hidden
        else:
            spilled = hidden.to("cpu")
            self.states[index] = spilled.pin_memory() if self.device.type == "cuda" else spilled

    def spilled(self) -> int:
        """Number of batches kept off the device."""
        return self.on_device.count(False)


@dataclass
class StreamRecord:
    """What a streaming pass used: for the scores' metadata (``Scores.meta["streaming"]``)."""

    source: str
    device: str
    budget_bytes: int | None
    layer_bytes: int
    batches: int = 0
    batches_spilled: int = 0
    device_peak_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class StreamingRunner:
    """One decoder layer at a time on ``device``; the calibration states carried from layer to layer.

    ``budget_bytes`` bounds the device memory for one layer's weights plus the states kept there
    (``None``: no bound, every state stays on the device). A budget below one layer and two batches of
    states (the input and output of one batch) is a ``PrunebenchError`` raised before any work.
    """

    def __init__(
        self, source: LayerSource, device: str | torch.device, budget_bytes: int | None = None
    ) -> None:
        self.source = source
        self.model = source.model
        self.device = torch.device(device)
        self.budget = budget_bytes
        self.adapter = get_adapter(self.model)
        self.largest_layer = max(source.layer_bytes(i) for i in range(self.adapter.num_layers))
        if budget_bytes is not None and budget_bytes < self.largest_layer:
            raise PrunebenchError(
                f"device budget {format_bytes(budget_bytes)} is smaller than one decoder layer "
                f"({format_bytes(self.largest_layer)} of weights): give at least that much"
            )
        self.record = StreamRecord(
            source=type(source).__name__,
            device=str(self.device),
            budget_bytes=budget_bytes,
            layer_bytes=self.largest_layer,
        )

    def check_batch(self, batch_size: int, seqlen: int, dtype: torch.dtype) -> None:
        """Refuse a budget that cannot hold one layer and one batch's input and output states."""
        if self.budget is None:
            return
        state = batch_size * seqlen * self.adapter.hidden_size * dtype.itemsize
        if self.budget < self.largest_layer + 2 * state:
            raise PrunebenchError(
                f"device budget {format_bytes(self.budget)} is too small for one decoder layer "
                f"({format_bytes(self.largest_layer)}) plus the input and output states of one batch "
                f"({format_bytes(2 * state)} for {batch_size} x {seqlen} tokens)"
            )

    def run(self, calibration: torch.Tensor, batch_size: int, probe: LayerProbe, desc: str) -> None:
        """Every layer in turn over all batches of ``calibration`` (``[nsamples, seqlen]`` token ids).

        With a source that loads sublayers and a probe that does not replace the outputs, each layer
        runs as its two sublayers, exactly as its own forward does (``h + attn(norm(h))``, then
        ``h + mlp(norm(h))``), with one sublayer's weights resident at a time.
        """
        dtype = self.dtype
        self.check_batch(min(batch_size, calibration.shape[0]), calibration.shape[1], dtype)
        split = self.source.sublayers and probe.carry is None
        with torch.no_grad(), self.device_peak():
            batches = calibration.split(batch_size)
            calls = [self.source.layer_inputs(batch, self.device) for batch in batches]
            kwargs = [call[1] for call in calls]
            sizes = [call[0].numel() * call[0].element_size() for call in calls]
            room = None if self.budget is None else self.budget - self.largest_layer
            keep_inputs = split and probe.on_output is not None
            if keep_inputs and room is not None:
                room //= 2  # the states entering the layer wait beside those after its attention
            states = HiddenStates(self.device, room, sizes)
            for b, call in enumerate(calls):
                states[b] = call[0]
            del calls
            entering = HiddenStates(self.device, room, sizes) if keep_inputs else None
            self.record.batches, self.record.batches_spilled = len(states), states.spilled()
            step = self._sublayers if split else self._layer
            for index in progress(range(self.adapter.num_layers), desc, unit="layer"):
                step(index, states, entering, kwargs, probe)

    def _layer(
        self, index: int, states: HiddenStates, _entering: None, kwargs: list[dict], probe: LayerProbe
    ) -> None:
        """Layer ``index`` whole: its forward over every batch, then the probe's carry, if any."""
        layer = self.source.load(index, self.device)
        handles = probe.attach(index, layer)
        try:
            for b in range(len(states)):
                hidden = states[b]
                out = hidden_of(layer(hidden, **kwargs[b]))
                if probe.on_output is not None:
                    probe.on_output(index, hidden, out)
                if probe.carry is None:
                    states[b] = out
        finally:
            for handle in handles:
                handle.remove()
        probe.finish_attention(index, layer)
        probe.finish(index, layer)
        if probe.carry is not None:
            carried = probe.carry(index, layer)
            for b in range(len(states)):
                states[b] = hidden_of(carried(states[b], **kwargs[b]))
            del carried
        self.source.release(index, layer)

    def _sublayers(
        self,
        index: int,
        states: HiddenStates,
        entering: HiddenStates | None,
        kwargs: list[dict],
        probe: LayerProbe,
    ) -> None:
        """Layer ``index`` as attention then MLP sublayer, one sublayer's weights resident at a time."""
        layer = self.source.load(index, self.device, "attention")
        handles = probe.attach(index, layer)
        try:
            for b in range(len(states)):
                hidden = states[b]
                if entering is not None:
                    entering[b] = hidden
                attention = layer.self_attn(hidden_states=layer.input_layernorm(hidden), **kwargs[b])[0]
                states[b] = hidden + attention
            probe.finish_attention(index, layer)
            self.source.release(index, layer, "attention")
            self.source.load(index, self.device, "mlp")
            for b in range(len(states)):
                hidden = states[b]
                out = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
                if entering is not None:
                    probe.on_output(index, entering[b], out)
                states[b] = out
        finally:
            for handle in handles:
                handle.remove()
        probe.finish(index, layer)
        self.source.release(index, layer, "mlp")

    def scan(self, probe: LayerProbe, desc: str) -> None:
        """The probe's ``finish_attention`` and ``finish`` on every layer, loaded a sublayer (or a layer)
        at a time (weight-only statistics)."""
        with torch.no_grad(), self.device_peak():
            for index in progress(range(self.adapter.num_layers), desc, unit="layer"):
                if self.source.sublayers:
                    layer = self.source.load(index, self.device, "attention")
                    probe.finish_attention(index, layer)
                    self.source.release(index, layer, "attention")
                    self.source.load(index, self.device, "mlp")
                    probe.finish(index, layer)
                    self.source.release(index, layer, "mlp")
                else:
                    layer = self.source.load(index, self.device)
                    probe.finish_attention(index, layer)
                    probe.finish(index, layer)
                    self.source.release(index, layer)

    @property
    def dtype(self) -> torch.dtype:
        """The weights' compute dtype: the source's (``SafetensorsLayers``), else the layers' own."""
        return next(iter(self._dtypes()))

    def _dtypes(self) -> Iterator[torch.dtype]:
        dtype = getattr(self.source, "dtype", None)
        if dtype is not None:
            yield dtype
        yield from (p.dtype for p in self.adapter.layers[0].parameters())

    @contextlib.contextmanager
    def device_peak(self) -> Iterator[None]:
        """Record the CUDA allocator's peak over the pass (``None`` on other devices)."""
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            yield
        finally:
            if cuda:
                torch.cuda.synchronize(self.device)
                self.record.device_peak_bytes = int(torch.cuda.max_memory_allocated(self.device))


def format_bytes(count: float) -> str:
    """``count`` bytes in the largest binary unit below it, e.g. ``'1.50 GiB'``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    power = min(int(math.log(max(count, 1), 1024)), len(units) - 1)
    return f"{count / 1024**power:.2f} {units[power]}"


def parse_bytes(text: str | int | float, what: str = "memory budget") -> int:
    """``'40GiB'``, ``'512MB'``, ``'1.5G'`` (binary without ``B``) or a plain number of bytes, as an int.

    Anything else, or a size that is not positive, is a ``PrunebenchError`` naming ``what``.
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = float(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*(?:([KMGT])(i?)(B?))?\s*", str(text), re.I)
        if match is None:
            raise PrunebenchError(f"{what} {text!r} is not a size such as 24GiB, 512MB or 1e9")
        number, prefix, binary, unit = match.groups()
        base = 1000 if prefix and unit and not binary else 1024
        value = float(number) * (base ** ("KMGT".index(prefix.upper()) + 1) if prefix else 1)
    if value <= 0 or not math.isfinite(value):
        raise PrunebenchError(f"{what} must be a positive size, got {text!r}")
    return int(value)
