"""Exact, fast greedy removal search shared by BlockPruner, FinerCut and SLEB.

The three methods share one loop (official code: BlockPruner `block_search_by_ppl`, llm_dissect
`greedy_pruning`, SLEB `sleb`): at every step each remaining candidate (an attention sublayer, an MLP
sublayer or a whole block) is removed on top of the removals chosen so far, the calibration set is
scored, and the candidate with the lowest score is removed for good; ties go to the candidate that comes
first in the method's candidate list (strict `<` in all three official loops).

Speed-ups (ours; none of them changes a decision, see `greedy_reference.reference_search` and the tests):
- **Masking inside one model.** Sublayers are skipped by running the decoder sublayer by sublayer with
  the model's own modules (`DecoderRunner`), never by rebuilding the model. Skipping a sublayer leaves
  the residual stream untouched, exactly as the official masked layers do.
- **Prefix cache.** The hidden states entering every layer (and leaving every attention sublayer) of the
  current model are cached per calibration batch, so a candidate in layer l recomputes only layers >= l
  (an MLP candidate starts after layer l's attention). After each step only the layers from the removed
  one onward are refreshed.
- **Candidate memo.** A candidate's own states after it (entering each later layer and after its
  attention) stay exact up to the next winner's sublayer, so at the next step a candidate upstream of
  the winner restarts there (after the winner's attention when the winner is an MLP).
- **The winner's states are the next prefix.** The winner was evaluated on exactly the next step's
  removal set, so its memo is the refreshed prefix cache; the cache adopts it instead of re-running the
  layers after the winner (one forward pass per step saved).
- `cache_gb` bounds both caches: what does not fit is kept every k-th layer (or not at all); the memo
  keeps after-attention states, and the prefix adopts the winner's, only when every layer fits.
- `device_cache_gb` (0: no bound) bounds the part of those caches kept on the compute device
  (`StatePlacement`): the prefix cache's first layers stay there, and the memo when all of it fits
  too; every other state waits in CPU memory (pinned on CUDA) and is copied back when a candidate
  starts from it. The copies are exact, so the order does not change; only time is spent.
- **Early abandoning.** Every score is a monotone function of a sum of per-row contributions that have a
  known floor (0 for token losses). A candidate whose partial sum already proves it strictly worse than
  the best candidate so far is dropped before its remaining batches are run. Candidates are visited in
  the order of their previous-step scores (best first) to make this bite; the winner is still the first
  minimum in the official list order.
- **Layer-major runs** (`search` with a runner whose weights are streamed, `greedy_stream`): a group of
  candidates (`sweep_size`, from `cache_gb`) goes through the layers together, each loaded sublayer
  applied to every candidate's every batch (`Stream`, `run_streams`), so the weights are read once per
  group and step instead of once per candidate and batch. Scores are then complete before any is known,
  so early abandoning is off; each (candidate, batch) runs the same sublayer calls on the same states,
  and its score sums the same row values in the same order, so the order and scores are the same.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from prunebench.errors import PrunebenchError
from prunebench.methods.removal_order import Removal
from prunebench.models import get_adapter

CandidateList = Callable[[list[Removal]], list[Removal]]
Record = Callable[[int, str, torch.Tensor], None]


class Criterion(abc.ABC):
    """How the logits of one calibration batch become the search score.

    The score of a candidate is `finalize(total)`, where `total` is the float64 sum, in row order, of
    `row_values` over all calibration rows. `finalize` must be non-decreasing and every row value must be
    >= `row_floor`; early abandoning relies on both.
    """

    row_floor: float = 0.0

    @abc.abstractmethod
    def row_values(self, logits: torch.Tensor, batch_index: int) -> list[float]:
        """One contribution per row of the batch."""

    @abc.abstractmethod
    def finalize(self, total: float) -> float:
        """The score from the sum of all row values."""


def accumulate(total: float, values: Sequence[float]) -> float:
    """Adds row values in order (the one summation used by both the fast and the reference search)."""
    for value in values:
        total += value
    return total


def attention_step(layer: nn.Module, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
    """`hidden + attn(input_norm(hidden))` with decoder layer `layer`'s modules (`[B, T, H]` in and out)."""
    return hidden + layer.self_attn(hidden_states=layer.input_layernorm(hidden), **kwargs)[0]


def mlp_step(layer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """`hidden + mlp(post_attention_norm(hidden))` with decoder layer `layer`'s modules."""
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))


@dataclass
class Stream:
    """One removal set run over every calibration batch, batch `b` from `starts[b]` = (stored hidden state
    `[B, T, H]`, layer, after_attention); `records[b]` (or None) sees its states as `DecoderRunner.run`'s
    `record` does."""

    removed: frozenset[Removal]
    starts: list[tuple[torch.Tensor, int, bool]]
    records: list[Record | None]


class DecoderRunner:
    """Runs a causal LM's decoder sublayer by sublayer on fixed batches, with chosen sublayers skipped.

    Each layer's keyword arguments (attention mask, rotary embeddings, ...) are captured once per batch
    from a forward pass of the model itself, so the sublayer calls below repeat exactly what the
    decoder layer's own forward does: `h + attn(input_norm(h))`, then `h + mlp(post_norm(h))`.
    """

    #: Candidates are scored one at a time, batch by batch (early abandoning applies).
    layer_major = False

    def __init__(self, model: nn.Module, batches: Sequence[torch.Tensor]):
        adapter = get_adapter(model)
        decoder = model.model
        self.model = model
        self.layers = adapter.layers
        self.norm = adapter.final_norm
        self.lm_head = adapter.lm_head
        self.device = adapter.lm_head.weight.device
        self.num_layers = len(self.layers)
        self.batches = list(batches)
        self.inputs: list[torch.Tensor] = []
        self.kwargs: list[list[dict]] = []
        for batch in self.batches:
            embeds, kwargs = self._capture(decoder, batch)
            self.inputs.append(embeds)
            self.kwargs.append(kwargs)

    @torch.no_grad()
    def _capture(self, decoder: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        captured: dict[int, tuple[torch.Tensor, dict]] = {}

        def hook(index: int):
            def pre_hook(_module, args, kwargs):
                hidden = args[0] if args else kwargs["hidden_states"]
                rest = {k: v for k, v in kwargs.items() if k != "hidden_states"}
                captured[index] = (hidden, rest)

            return pre_hook

        handles = [
            layer.register_forward_pre_hook(hook(i), with_kwargs=True) for i, layer in enumerate(self.layers)
        ]
        try:
            decoder(input_ids=batch.to(self.lm_head.weight.device), use_cache=False)
        finally:
            for handle in handles:
                handle.remove()
        return captured[0][0], [captured[i][1] for i in range(self.num_layers)]

    def attention_step(self, layer: int, hidden: torch.Tensor, batch: int) -> torch.Tensor:
        """Residual stream after layer `layer`'s attention sublayer."""
        return attention_step(self.layers[layer], hidden, self.kwargs[batch][layer])

    def mlp_step(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """Residual stream after layer `layer`'s MLP sublayer."""
        return mlp_step(self.layers[layer], hidden)

    def run(
        self,
        hidden: torch.Tensor,
        batch: int,
        start: int,
        removed: frozenset[Removal],
        after_attention: bool = False,
        record: Record | None = None,
    ) -> torch.Tensor:
        """Runs layers `start`.. to the end with `removed` skipped; returns the final residual stream.

        `after_attention`: `hidden` already went through layer `start`'s attention slot.
        `record(layer, "in" | "mid", hidden)` sees the state entering each layer and after its attention.
        """
        for layer in range(start, self.num_layers):
            skip_block = Removal(layer, "block") in removed
            if not (after_attention and layer == start):
                if record is not None:
                    record(layer, "in", hidden)
                if not skip_block and Removal(layer, "attn") not in removed:
                    hidden = self.attention_step(layer, hidden, batch)
            if record is not None:
                record(layer, "mid", hidden)
            if not skip_block and Removal(layer, "mlp") not in removed:
                hidden = self.mlp_step(layer, hidden)
        return hidden

    def run_streams(self, streams: Sequence[Stream], placement: StatePlacement) -> list[list[torch.Tensor]]:
        """Final residual stream of every stream and batch, run batch by batch (`run`)."""
        return [
            [
                self.run(placement.fetch(hidden), b, start, stream.removed, after, stream.records[b])
                for b, (hidden, start, after) in enumerate(stream.starts)
            ]
            for stream in streams
        ]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head on the final residual stream (final norm included)."""
        return self.lm_head(self.norm(hidden))

    @torch.no_grad()
    def dense_logits(self) -> list[torch.Tensor]:
        """The dense model's logits `[B, T, V]` per batch, from the model's own forward."""
        return [self.model(input_ids=b.to(self.device), use_cache=False).logits for b in self.batches]


class StatePlacement:
    """Where a cached state lives: on the compute device while the device budget lasts, else in CPU
    memory (pinned on CUDA). The split is fixed once from the sizes: in a layer-major search the states
    of the first `in_flight` streams of a sweep, then the prefix cache's states of the first
    `prefix_layers` layers, then the memo's states when `memo_on_device`."""

    def __init__(self, device: torch.device, prefix_layers: int, memo_on_device: bool, in_flight: int = 0):
        self.device = device
        self.prefix_layers = prefix_layers
        self.memo_on_device = memo_on_device
        self.in_flight = in_flight

    @classmethod
    def plan(
        cls,
        runner: DecoderRunner,
        device_gb: float,
        prefix_stride: int,
        memo_stride: int,
        candidates: int,
        sweep: int = 0,
    ) -> StatePlacement:
        """Fill `device_gb` (0: no bound) with the `sweep` streams run together (layer-major search), then
        prefix-cache layers, then the whole memo if it fits."""
        layers = runner.num_layers
        if not device_gb:
            return cls(runner.device, layers, True, sweep)
        state_bytes = max(sum(h.numel() * h.element_size() for h in runner.inputs), 1)
        budget = device_gb * 2**30
        in_flight = min(sweep, int(budget // state_bytes))
        budget -= in_flight * state_bytes
        per_layer = (2 if prefix_stride == 1 else 1) * state_bytes
        kept = int(budget // per_layer)
        prefix_layers = min(layers, kept * (prefix_stride if prefix_stride > 1 else 1))
        room = budget - per_layer * min(kept, math.ceil(layers / max(prefix_stride, 1)))
        memo_bytes = 0 if memo_stride == 0 else 2 * candidates * (layers - 1) * state_bytes // memo_stride
        return cls(runner.device, prefix_layers, memo_bytes <= room, in_flight)

    def keep(self, hidden: torch.Tensor, on_device: bool) -> torch.Tensor:
        """``hidden`` as stored: itself on the device, or a copy in CPU memory (also when the device is
        the CPU, where spilling only costs the copy)."""
        if on_device:
            return hidden
        spilled = torch.empty(hidden.shape, dtype=hidden.dtype, pin_memory=self.device.type == "cuda")
        return spilled.copy_(hidden)

    def prefix(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        return self.keep(hidden, layer < self.prefix_layers)

    def memo(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.keep(hidden, self.memo_on_device)

    def swept(self, stream: int, hidden: torch.Tensor) -> torch.Tensor:
        """A state of stream `stream` of a sweep between two sublayers."""
        return self.keep(hidden, stream < self.in_flight)

    def fetch(self, hidden: torch.Tensor) -> torch.Tensor:
        """A stored state on the compute device."""
        return hidden.to(self.device, non_blocking=True)


class PrefixCache:
    """Hidden states of the current model per batch: entering layers (every `stride`-th) and after
    attention (when `stride` is 1), kept where `placement` says."""

    def __init__(self, runner: DecoderRunner, stride: int, placement: StatePlacement | None = None):
        self.runner = runner
        self.stride = stride
        self.placement = placement or StatePlacement(runner.device, runner.num_layers, True)
        self.entering: list[dict[int, torch.Tensor]] = [
            {0: self.placement.prefix(0, h)} for h in runner.inputs
        ]
        self.middle: list[dict[int, torch.Tensor]] = [{} for _ in runner.inputs]

    def refresh(self, removed: frozenset[Removal], from_layer: int) -> None:
        """Recomputes the cached states of layers >= `from_layer` for the removal set `removed`."""
        start = from_layer - from_layer % self.stride

        def recorder(b: int) -> Record:
            def record(layer: int, kind: str, hidden: torch.Tensor) -> None:
                if kind == "in" and layer % self.stride == 0 and layer >= from_layer:
                    self.entering[b][layer] = self.placement.prefix(layer, hidden)
                elif kind == "mid" and self.stride == 1 and layer >= from_layer:
                    self.middle[b][layer] = self.placement.prefix(layer, hidden)

            return record

        batches = range(len(self.runner.inputs))
        stream = Stream(
            removed,
            [(self.entering[b][start], start, False) for b in batches],
            [recorder(b) for b in batches],
        )
        self.runner.run_streams([stream], self.placement)

    def adopt(self, winner: Removal, states: list[dict[tuple[int, str], torch.Tensor]]) -> None:
        """Takes the winner's own states (every layer after it, per batch) as the refreshed cache.

        Exactly what `refresh(removed | {winner}, winner.layer)` would compute: the winner's states were
        computed by the same runs on the same removal set. Upstream of the winner nothing changes; when
        the winner skips layer L's attention, the state after it is the state entering L.
        """
        for b, saved in enumerate(states):
            for (layer, kind), hidden in saved.items():
                (self.entering if kind == "in" else self.middle)[b][layer] = self.placement.prefix(
                    layer, hidden
                )
            if winner.part != "mlp":
                self.middle[b][winner.layer] = self.entering[b][winner.layer]

    def start(self, candidate: Removal, batch: int) -> tuple[torch.Tensor, int, bool]:
        """(stored hidden, layer, after_attention) from which a candidate's forward must start."""
        if candidate.part == "mlp" and self.stride == 1:
            return self.middle[batch][candidate.layer], candidate.layer, True
        layer = candidate.layer - candidate.layer % self.stride
        return self.entering[batch][layer], layer, False


def _position(layer: int, kind: str) -> int:
    """Order of the residual-stream states: entering layer l (`in`) comes before after-attention (`mid`)."""
    return 2 * layer + (kind == "mid")


class CandidateMemo:
    """Each candidate's own hidden states after it (entering later layers, and after their attention)
    from its last evaluation.

    After a step whose winner is sublayer w, such a state that comes before w in the residual stream is
    still exact: the new removal changes nothing upstream of it. A candidate upstream of the winner
    therefore restarts at the winner instead of at itself. States entering layers are kept every
    `stride`-th layer (0 = off); after-attention states only when `stride` is 1.
    """

    def __init__(self, stride: int, num_layers: int, placement: StatePlacement | None = None):
        self.stride = stride
        self.num_layers = num_layers
        self.placement = placement
        self.states: dict[tuple[Removal, int], dict[tuple[int, str], torch.Tensor]] = {}

    def start(self, candidate: Removal, batch: int) -> tuple[torch.Tensor, int, bool] | None:
        """(stored hidden, layer, after_attention) of the deepest still-valid state of this candidate, if any."""
        saved = self.states.get((candidate, batch))
        if not saved:
            return None
        layer, kind = max(saved, key=lambda key: _position(*key))
        return saved[(layer, kind)], layer, kind == "mid"

    def recorder(self, candidate: Removal, batch: int) -> Record | None:
        if self.stride == 0:
            return None
        saved = self.states.setdefault((candidate, batch), {})

        def record(layer: int, kind: str, hidden: torch.Tensor) -> None:
            if layer > candidate.layer and (layer % self.stride == 0 if kind == "in" else self.stride == 1):
                saved[(layer, kind)] = hidden if self.placement is None else self.placement.memo(hidden)

        return record

    def complete_states(
        self, winner: Removal, batches: int
    ) -> list[dict[tuple[int, str], torch.Tensor]] | None:
        """The winner's states of every layer after it, per batch; None if the memo does not hold them all."""
        if self.stride != 1:
            return None
        states = [self.states.get((winner, b), {}) for b in range(batches)]
        needed = 2 * (self.num_layers - 1 - winner.layer)
        return states if all(len(saved) == needed for saved in states) else None

    def after_step(self, winner: Removal) -> None:
        """Drops the winner's states and every state downstream of the winner's sublayer."""
        last_valid = _position(winner.layer, "mid" if winner.part == "mlp" else "in")
        for key in list(self.states):
            if key[0] == winner:
                del self.states[key]
                continue
            saved = self.states[key]
            for state in [k for k in saved if _position(*k) > last_valid]:
                del saved[state]


def cache_strides(runner: DecoderRunner, cache_gb: float, candidates: int) -> tuple[int, int]:
    """Layer spacing of the prefix cache and of the candidate memo that fit in `cache_gb`.

    The prefix cache comes first: spacing 1 (with after-attention states) when all of it fits. The memo
    gets what is left: spacing 1 when every state of every candidate fits (`candidates` × 2(layers - 1),
    after-attention states included), else `candidates` × (layers - 1) entering states spaced to fit,
    or 0 (off).
    """
    state_bytes = max(sum(h.numel() * h.element_size() for h in runner.inputs), 1)
    budget = cache_gb * 2**30
    layers = runner.num_layers
    if (2 * layers + 1) * state_bytes <= budget:
        prefix, used = 1, (2 * layers + 1) * state_bytes
    else:
        kept = max(1, int(budget // state_bytes))
        prefix = max(2, math.ceil(layers / kept))
        used = budget
    room = int((budget - used) // state_bytes)
    if room < 1:
        return prefix, 0
    if room >= 2 * candidates * (layers - 1):
        return prefix, 1
    return prefix, max(2, math.ceil(candidates * (layers - 1) / room))


@dataclass
class SearchResult:
    """Removal order and the winning score at every step."""

    order: list[Removal]
    scores: list[float]


class _Progress:
    def __init__(self, name: str, total: int | None, show: bool):
        self.bar = tqdm(total=total, desc=f"{name} search", unit="step", disable=not show)

    def step(self, removal: Removal, score: float) -> None:
        self.bar.update(1)
        self.bar.set_postfix(removed=f"{removal.layer}.{removal.part}", best=f"{score:.6g}")

    def close(self) -> None:
        self.bar.close()


def pick(best: tuple[float, int] | None, score: float, position: int) -> bool:
    """True if (score, position) beats the best so far: lower score, ties to the earlier list position."""
    if not math.isfinite(score):
        return False
    return best is None or (score, position) < best


def greedy_search(
    model: nn.Module,
    batches: Sequence[torch.Tensor],
    criterion: Criterion,
    candidates: CandidateList,
    max_steps: int,
    name: str,
    cache_gb: float = 8.0,
    device_cache_gb: float = 0.0,
    progress: bool = True,
    stop: Callable[[list[Removal]], bool] | None = None,
) -> SearchResult:
    """The fast search on a resident model: returns exactly what `reference_search` returns, in less time.

    `stop(order)`, when given, ends the search after the first step at which it is true (the order is
    then a prefix of the longer search's). `device_cache_gb` (0: no bound) keeps at most that much of
    the caches on the compute device, the rest in CPU memory (`StatePlacement`).
    """
    with torch.no_grad():
        runner = DecoderRunner(model, batches)
    return search(runner, criterion, candidates, max_steps, name, cache_gb, device_cache_gb, progress, stop)


def sweep_size(runner: DecoderRunner, cache_gb: float, candidates: int) -> int:
    """Candidates run together in one layer-major sweep: as many as have their states (every calibration
    batch, `[N, T, H]` in all) within `cache_gb` GiB, at least one and at most `candidates`."""
    state_bytes = max(sum(h.numel() * h.element_size() for h in runner.inputs), 1)
    return max(1, min(candidates, int(cache_gb * 2**30 // state_bytes)))


def search(
    runner: DecoderRunner,
    criterion: Criterion,
    candidates: CandidateList,
    max_steps: int,
    name: str,
    cache_gb: float = 8.0,
    device_cache_gb: float = 0.0,
    progress: bool = True,
    stop: Callable[[list[Removal]], bool] | None = None,
) -> SearchResult:
    """`greedy_search` on any runner: the resident `DecoderRunner` scores candidates one at a time with
    early abandoning; a `layer_major` runner (`greedy_stream.StreamedDecoder`) scores them `sweep_size` at a
    time, every calibration batch through each loaded sublayer, each score in full. Same order and scores.

    Raises `PrunebenchError` when no candidate of a step has a finite score.
    """
    with torch.no_grad():
        most = 2 * runner.num_layers
        prefix_stride, memo_stride = cache_strides(runner, cache_gb, most)
        sweep = sweep_size(runner, cache_gb, most) if runner.layer_major else 0
        placement = StatePlacement.plan(runner, device_cache_gb, prefix_stride, memo_stride, most, sweep)
        cache = PrefixCache(runner, prefix_stride, placement)
        memo = CandidateMemo(memo_stride, runner.num_layers, placement)
        rows = [int(b.shape[0]) for b in runner.batches]
        order: list[Removal] = []
        removed: frozenset[Removal] = frozenset()
        cache.refresh(removed, 0)
        previous: dict[Removal, float] = {}
        scores: list[float] = []
        bar = _Progress(name, max_steps, progress)
        for _ in range(max_steps):
            listed = candidates(order)
            if not listed:
                break
            best: tuple[float, int] | None = None
            swept = _sweeps(runner, cache, memo, criterion, removed, listed, sweep) if sweep else None
            visit = sorted(range(len(listed)), key=lambda i: (previous.get(listed[i], math.inf), i))
            for position in visit:
                candidate = listed[position]
                score = (
                    swept[position]
                    if swept is not None
                    else _evaluate(
                        runner, cache, memo, criterion, removed | {candidate}, candidate, rows, best
                    )
                )
                previous[candidate] = score
                if pick(best, score, position):
                    best = (score, position)
            if best is None:
                raise PrunebenchError(f"{name}: no candidate gives a finite score at step {len(order) + 1}")
            winner = listed[best[1]]
            order.append(winner)
            scores.append(best[0])
            removed = removed | {winner}
            states = memo.complete_states(winner, len(rows))
            if states is None:
                cache.refresh(removed, winner.layer)
            else:
                cache.adopt(winner, states)
            memo.after_step(winner)
            bar.step(winner, best[0])
            if stop is not None and stop(order):
                break
        bar.close()
    return SearchResult(order, scores)


def _evaluate(
    runner: DecoderRunner,
    cache: PrefixCache,
    memo: CandidateMemo,
    criterion: Criterion,
    removed: frozenset[Removal],
    candidate: Removal,
    rows: list[int],
    best: tuple[float, int] | None,
) -> float:
    """Score of one candidate; returns a lower bound > best as soon as the candidate cannot win."""
    total = 0.0
    remaining = sum(rows)
    for b in range(len(rows)):
        hidden, start, after_attention = memo.start(candidate, b) or cache.start(candidate, b)
        record = memo.recorder(candidate, b)
        hidden = runner.run(
            cache.placement.fetch(hidden), b, start, removed, after_attention=after_attention, record=record
        )
        total = accumulate(total, criterion.row_values(runner.logits(hidden), b))
        remaining -= rows[b]
        if best is not None and remaining:
            bound = criterion.finalize(total + criterion.row_floor * remaining)
            if bound > best[0]:
                return bound
    return criterion.finalize(total)


def _sweeps(
    runner: DecoderRunner,
    cache: PrefixCache,
    memo: CandidateMemo,
    criterion: Criterion,
    removed: frozenset[Removal],
    listed: list[Removal],
    size: int,
) -> list[float]:
    """The full score of every listed candidate (no early abandoning), `size` candidates per
    `run_streams` call, grouped by where they start (so a group of late starters reads only the last
    layers); each score sums its batches in batch order, as `_evaluate` does."""
    batches = range(len(runner.inputs))
    streams = [
        Stream(
            removed | {candidate},
            [memo.start(candidate, b) or cache.start(candidate, b) for b in batches],
            [memo.recorder(candidate, b) for b in batches],
        )
        for candidate in listed
    ]
    by_start = sorted(range(len(listed)), key=lambda i: min(start for _, start, _ in streams[i].starts))
    scores = [math.nan] * len(listed)
    for first in range(0, len(listed), size):
        group = by_start[first : first + size]
        for i, finals in zip(
            group, runner.run_streams([streams[i] for i in group], cache.placement), strict=True
        ):
            total = 0.0
            for b, hidden in enumerate(finals):
                logits = runner.logits(cache.placement.fetch(hidden))
                total = accumulate(total, criterion.row_values(logits, b))
            scores[i] = criterion.finalize(total)
    return scores
