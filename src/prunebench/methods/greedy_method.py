"""What BlockPruner, FinerCut and SLEB share around the search: input checks, resident or streamed scoring,
the saved order, `select`."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.methods.base import Method, MethodConfig, Scores
from prunebench.methods.greedy_search import DecoderRunner, SearchResult, sweep_size
from prunebench.methods.greedy_stream import StreamedDecoder, device_cache_gb
from prunebench.methods.removal_order import (
    Removal,
    longest_prefix_keeping_a_sublayer,
    plan_from_order,
    reaches,
    removal_params,
)
from prunebench.models import get_adapter
from prunebench.models.counting import decoder_params
from prunebench.models.streaming import ResidentRunner, Runner
from prunebench.plan import PruningPlan


def calibration_batches(calibration: torch.Tensor, batch_size: int, name: str) -> list[torch.Tensor]:
    """Calibration rows `[N, T]` split into the method's evaluation batches; too little data is an error."""
    if calibration.dim() != 2 or calibration.shape[0] < 1 or calibration.shape[1] < 2:
        raise PrunebenchError(
            f"{name}: calibration must hold at least one row of at least 2 tokens, got shape "
            f"{list(calibration.shape)}"
        )
    if batch_size < 1:
        raise PrunebenchError(f"{name}: batch_size must be >= 1, got {batch_size}")
    return list(calibration.split(batch_size))


def next_token_labels(ids: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Each position's label `[B, T]`: the next token, and `ignore_index` in each row's last slot.

    Computed once per calibration batch; `next_token_nll` then scores the logits in place.
    """
    labels = torch.full_like(ids, ignore_index)
    labels[:, :-1] = ids[:, 1:]
    return labels


def next_token_nll(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Per-token next-token cross-entropy `[B, T-1]` in fp32 (0 where the label is `ignore_index`).

    `labels` come from `next_token_labels`, so the logits are used in place (`[B*T, V]`, vocabulary
    contiguous) rather than copying their `[:, :-1]` slice: the same values as cross-entropy over the
    shifted logits, without moving `B*T*V` floats.
    """
    nll = nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        labels.to(logits.device).reshape(-1),
        reduction="none",
        ignore_index=ignore_index,
    )
    return nll.view(labels.shape)[:, :-1]


def check_dense(model: nn.Module, name: str) -> None:
    """The searches index the dense model's layers; a pruned model is refused."""
    if not get_adapter(model).is_dense():
        raise PrunebenchError(f"{name} searches a dense model; this one is already pruned")


def check_reachable(
    model: nn.Module, allowed: list[Removal], steps: int, target_ratio: float, name: str
) -> None:
    """Refuse, before any search, a ratio that even the `steps` largest allowed removals cannot reach.

    When the allowed removals together cover every sublayer, one of them must stay undone (a plan
    never removes every sublayer), so at most `len(allowed) - 1` count.
    """
    adapter = get_adapter(model)
    if longest_prefix_keeping_a_sublayer(adapter, allowed) < len(allowed):
        steps = min(steps, len(allowed) - 1)
    sizes = sorted((removal_params(adapter, r) for r in allowed), reverse=True)[:steps]
    total = decoder_params(model)
    most = sum(sizes) / total
    if not reaches(sum(sizes), total, target_ratio):
        raise PrunebenchError(
            f"{name}: ratio {target_ratio} needs more removals than allowed: at most {steps} of "
            f"{len(allowed)} candidates may be removed, which removes at most {most:.4f} of decoder parameters"
        )


def ratio_stop(model: nn.Module, max_ratio: float) -> Callable[[list[Removal]], bool] | None:
    """The search's stop condition for `max_ratio` (0: none): the order's removals reach that decoder ratio.

    The same arithmetic as `plan_from_order`, so the stopped order holds the prefix of every ratio up to
    `max_ratio`, exactly as a longer search would.
    """
    if not max_ratio:
        return None
    adapter = get_adapter(model)
    total = decoder_params(model)
    return lambda order: reaches(sum(removal_params(adapter, r) for r in order), total, max_ratio)


def check_search_budget(
    max_steps: int, max_ratio: float, batch_size: int, cache_gb: float, device_cache_gb: float = 0.0
) -> None:
    """The search-length and cache options every greedy method shares."""
    if max_steps < 0 or batch_size < 1 or cache_gb < 0:
        raise PrunebenchError("max_steps must be >= 0, batch_size >= 1 and cache_gb >= 0")
    if device_cache_gb < 0:
        raise PrunebenchError(f"device_cache_gb must be >= 0 (0: no bound), got {device_cache_gb}")
    if not 0 <= max_ratio < 1:
        raise PrunebenchError(f"max_ratio must be in [0, 1) (0: no limit), got {max_ratio}")


def check_within_search(target_ratio: float, max_ratio: float, name: str) -> None:
    """A ratio beyond `max_ratio` needs removals the stopped search never ranked."""
    if max_ratio and target_ratio > max_ratio:
        raise PrunebenchError(
            f"{name}: ratio {target_ratio} is beyond max_ratio {max_ratio}, where the search stops; raise max_ratio"
        )


def scores_from_search(result: SearchResult, meta: dict) -> Scores:
    """The removal order as Scores: tensors for inspection, the order itself in the metadata."""
    parts = {"attn": 0, "mlp": 1, "block": 2}
    tensors = {
        "order_layer": torch.tensor([r.layer for r in result.order], dtype=torch.long),
        "order_part": torch.tensor([parts[r.part] for r in result.order], dtype=torch.long),
        "order_score": torch.tensor(result.scores, dtype=torch.float64),
    }
    return Scores(
        tensors=tensors,
        meta={"order": [r.to_json() for r in result.order], "step_scores": result.scores, **meta},
    )


def order_from_scores(scores: Scores, model: nn.Module, name: str) -> list[Removal]:
    """The removal order saved by `scores_from_search`, checked against the model it is applied to."""
    if "order" not in scores.meta:
        raise PrunebenchError(f"{name}: these scores hold no removal order")
    layers = scores.meta.get("num_layers")
    if layers != get_adapter(model).num_layers:
        raise PrunebenchError(
            f"{name}: scores are for a {layers}-layer model, this one has {get_adapter(model).num_layers}"
        )
    return [Removal.from_json(item) for item in scores.meta["order"]]


class GreedyOrderMethod(Method):
    """A method whose scores are a greedy removal order; `select` takes its shortest sufficient prefix.

    `score` searches the resident model; `score_layers` with a `StreamingRunner` (`prunebench score
    --stream`) searches with the weights streamed one sublayer at a time (`greedy_stream`): the same order.
    """

    no_streaming = None
    streaming_note = (
        "layer-major: per step, each group of candidates (as many as cache_gb holds) is one read of the "
        "layers, every calibration batch through each loaded sublayer; no early abandoning; same order"
    )

    @abc.abstractmethod
    def _steps(self, model: nn.Module, config: MethodConfig) -> int:
        """The search length for this model (raises `PrunebenchError` for one that cannot be run)."""

    @abc.abstractmethod
    def search_order(
        self, runner: DecoderRunner | StreamedDecoder, model: nn.Module, steps: int, config: MethodConfig
    ) -> Scores:
        """The method's search (`greedy_search.search`) over `runner`'s calibration batches, as Scores."""

    def score(self, model: nn.Module, calibration: torch.Tensor, config: MethodConfig) -> Scores:
        check_dense(model, self.name)
        batches = calibration_batches(calibration, config.batch_size, self.name)
        steps = self._steps(model, config)
        with torch.no_grad():
            runner = DecoderRunner(model, batches)
        return self.search_order(runner, model, steps, config)

    def score_layers(self, runner: Runner, calibration: torch.Tensor | None, config: MethodConfig) -> Scores:
        """The search with the weights streamed by `runner` (a `StreamingRunner`; a `ResidentRunner` is
        `score`). `runner.budget` (bytes), when set, bounds the device: one layer, the final norm and LM
        head, and the states (`greedy_stream.device_cache_gb`; a budget below one batch's states is a
        `PrunebenchError` before any weight is read). Scores as `score`'s, plus `streamed_search`: the
        candidates per sweep, the sweeps and the sublayer loads."""
        if isinstance(runner, ResidentRunner):
            return self.score(runner.model, calibration, config)
        model = runner.model
        check_dense(model, self.name)
        batches = calibration_batches(calibration, config.batch_size, self.name)
        steps = self._steps(model, config)
        rows, seqlen = batches[0].shape
        device_gb = device_cache_gb(runner, int(rows), int(seqlen), config.device_cache_gb)
        with torch.no_grad(), runner.device_peak():
            decoder = StreamedDecoder(runner.source, batches, runner.device)
            scores = self.search_order(decoder, model, steps, replace(config, device_cache_gb=device_gb))
        runner.record.batches = len(batches)
        scores.meta["streamed_search"] = {
            "candidates_per_sweep": sweep_size(decoder, config.cache_gb, 2 * decoder.num_layers),
            "sweeps": decoder.sweeps,
            "sublayer_loads": decoder.loads,
            "early_abandoning": False,
        }
        return scores

    def select(
        self, scores: Scores, model: nn.Module, target_ratio: float, config: MethodConfig
    ) -> PruningPlan:
        """`plan_from_order`: the shortest prefix whose real parameter count reaches the ratio."""
        return plan_from_order(
            get_adapter(model),
            order_from_scores(scores, model, self.name),
            target_ratio,
            self.name,
            config.to_dict(),
            scores.meta.get("model", ""),
            max_steps=config.max_steps or None,
        )
