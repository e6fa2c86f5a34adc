"""The greedy searches (BlockPruner, FinerCut, SLEB) with the decoder's weights streamed layer by layer.

`StreamedDecoder` gives `greedy_search.search` what `DecoderRunner` gives it, but the model is a
`LayerSource` (`prunebench.models.streaming`: `SafetensorsLayers` reads one sublayer at a time from the
checkpoint, `ResidentLayers` moves a CPU-resident layer): only one (sub)layer's weights, the final norm
and the LM head are ever on the compute device. Runs are layer-major (`run_streams`): for each layer, the
attention sublayer is loaded once and applied to every (candidate, batch) state that has reached it, then
released, then the MLP likewise; a sublayer that every stream skips is not read at all.

Weight traffic per search step: one read of the layers from the group's earliest start per group of
`sweep_size` candidates (all of a step's candidates when their states fit in `cache_gb`), plus one read
from the winner's layer on to refresh the prefix cache unless the memo holds the winner's states; FinerCut
reads the dense model once more for its reference logits. The resident search instead reads each resident
layer once per candidate and batch. Early abandoning is off here (see `greedy_search`); the order and the
step scores are those of the resident search (tests: tests/test_greedy_stream.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.methods.greedy_search import StatePlacement, Stream, attention_step, mlp_step
from prunebench.methods.removal_order import Removal
from prunebench.models import get_adapter
from prunebench.models.streaming import LayerSource, StreamingRunner, format_bytes

#: The sublayer a removal part takes out, by the streaming source's part name.
_PART = {"attention": "attn", "mlp": "mlp"}


class StreamedDecoder:
    """The decoder of `source` run sublayer by sublayer on `device`, weights loaded one sublayer at a time.

    `batches`: calibration token ids, `[B, T]` each. Each batch's hidden state entering layer 0 and the
    keyword arguments every layer gets (mask, rotary embeddings) come from `source.layer_inputs`, as in
    `StreamingRunner`. `loads` counts sublayer loads and `sweeps` the `run_streams` calls (the traffic).
    """

    #: Candidates are scored in groups, every batch through each loaded sublayer (no early abandoning).
    layer_major = True

    def __init__(self, source: LayerSource, batches: Sequence[torch.Tensor], device: torch.device) -> None:
        self.source = source
        self.device = torch.device(device)
        self.num_layers = get_adapter(source.model).num_layers
        self.batches = list(batches)
        calls = [source.layer_inputs(batch, self.device) for batch in self.batches]
        self.inputs = [hidden for hidden, _ in calls]
        self.kwargs = [kwargs for _, kwargs in calls]
        self.norm, self.lm_head = source.final_modules(self.device)
        self.loads = 0
        self.sweeps = 0

    def run_streams(self, streams: Sequence[Stream], placement: StatePlacement) -> list[list[torch.Tensor]]:
        """The final residual stream (as stored: on the device or a CPU copy) of every stream and batch.

        Layer-major: from the earliest start on, each sublayer is loaded once for all streams. Between two
        sublayers the states of stream i wait where `placement.swept(i, ...)` puts them.
        """
        states = [[hidden for hidden, _, _ in stream.starts] for stream in streams]
        first = min(start for stream in streams for _, start, _ in stream.starts)
        for layer in range(first, self.num_layers):
            for part in ("attention", "mlp"):
                self._sublayer(layer, part, streams, states, placement)
        self.sweeps += 1
        return states

    def _sublayer(
        self,
        layer: int,
        part: str,
        streams: Sequence[Stream],
        states: list[list[torch.Tensor]],
        placement: StatePlacement,
    ) -> None:
        """Sublayer `part` of `layer` on every (stream, batch) that has reached it, exactly as
        `DecoderRunner.run` does (the state is recorded before the sublayer, a removed one is skipped)."""
        kind = "in" if part == "attention" else "mid"
        work = []
        for i, stream in enumerate(streams):
            skip = {Removal(layer, "block"), Removal(layer, _PART[part])} & stream.removed
            for b, (_, start, after_attention) in enumerate(stream.starts):
                if start < layer or (start == layer and not (part == "attention" and after_attention)):
                    work.append((i, b, bool(skip)))
        if not work:
            return
        module = self._load(layer, part) if not all(skip for _, _, skip in work) else None
        try:
            for i, b, skip in work:
                record = streams[i].records[b]
                if record is None and skip:
                    continue
                hidden = placement.fetch(states[i][b])
                if record is not None:
                    record(layer, kind, hidden)
                if not skip:
                    step = (
                        attention_step(module, hidden, self.kwargs[b])
                        if kind == "in"
                        else mlp_step(module, hidden)
                    )
                    states[i][b] = placement.swept(i, step)
        finally:
            if module is not None:
                self._release(layer, part, module)

    def _load(self, layer: int, part: str) -> nn.Module:
        self.loads += 1
        return self.source.load(layer, self.device, part if self.source.sublayers else None)

    def _release(self, layer: int, part: str, module: nn.Module) -> None:
        self.source.release(layer, module, part if self.source.sublayers else None)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head on the final residual stream (final norm included), `[B, T, V]`."""
        return self.lm_head(self.norm(hidden))

    @torch.no_grad()
    def dense_logits(self) -> list[torch.Tensor]:
        """The dense model's logits `[B, T, V]` per batch (one more read of every layer)."""
        placement = StatePlacement(self.device, self.num_layers, True, in_flight=1)
        dense = Stream(frozenset(), [(h, 0, False) for h in self.inputs], [None] * len(self.inputs))
        return [self.logits(placement.fetch(h)) for h in self.run_streams([dense], placement)[0]]


def device_cache_gb(runner: StreamingRunner, batch_size: int, seqlen: int, device_gb: float) -> float:
    """The device budget (GiB, 0: none) for a streamed search's states: `device_gb`, lowered to what
    `runner.budget` (bytes) leaves after one decoder layer, the final norm and the LM head.

    Raises `PrunebenchError`, before any weight is read, when that room cannot hold the input and output
    states of one batch (`batch_size` x `seqlen` tokens).
    """
    if runner.budget is None:
        return device_gb
    adapter = runner.adapter
    dtype = runner.dtype
    head = (
        sum(p.numel() for m in (adapter.final_norm, adapter.lm_head) for p in m.parameters()) * dtype.itemsize
    )
    state = batch_size * seqlen * adapter.hidden_size * dtype.itemsize
    room = runner.budget - runner.largest_layer - head
    if room < 2 * state:
        raise PrunebenchError(
            f"device budget {format_bytes(runner.budget)} is too small for one decoder layer "
            f"({format_bytes(runner.largest_layer)}), the final norm and LM head ({format_bytes(head)}) and "
            f"the input and output states of one batch ({format_bytes(2 * state)} for {batch_size} x {seqlen} "
            "tokens)"
        )
    return min(device_gb, room / 2**30) if device_gb else room / 2**30
