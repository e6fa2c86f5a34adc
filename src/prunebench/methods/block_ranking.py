"""Shared pieces of the one-shot whole-block rankings (Shortened-LLaMA, ShortGPT).

Each of these methods measures one number per decoder layer on the dense model, sorts the layers once
(least important first, ties to the lower layer index as Python's stable sort does in the official
code) and removes the shortest prefix of that order that reaches the target ratio. This module holds
what they share: replaying decoder layers on captured inputs, the stable ascending order, the protected
blocks, the ratio check made before scoring, turning an order into a plan, and :class:`BlockRanking`,
the score/select body of such a method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from prunebench.errors import PrunebenchError
from prunebench.methods.base import Method, MethodConfig, Scores
from prunebench.methods.removal_order import Removal, plan_from_order, reaches, removal_params
from prunebench.models import get_adapter
from prunebench.models.adapter import ModelAdapter
from prunebench.models.counting import decoder_params
from prunebench.models.streaming import ResidentRunner, Runner
from prunebench.plan import PruningPlan


def check_calibration(calibration: torch.Tensor) -> None:
    """Reject calibration that is not a [nsamples, seqlen] LongTensor with at least two tokens per row."""
    if not isinstance(calibration, torch.Tensor) or calibration.dtype != torch.long:
        raise PrunebenchError("calibration must be a LongTensor of token ids [nsamples, seqlen]")
    if calibration.dim() != 2 or calibration.shape[0] < 1 or calibration.shape[1] < 2:
        raise PrunebenchError(
            f"calibration must have shape [nsamples >= 1, seqlen >= 2], got {list(calibration.shape)}"
        )


def ascending_order(scores: torch.Tensor) -> list[int]:
    """Layer indices sorted by ascending score; equal scores keep the lower index first (stable sort)."""
    return [int(i) for i in torch.sort(scores.double(), stable=True).indices]


def protected_blocks(num_layers: int) -> list[int]:
    """The blocks that Shortened-LLaMA's "+" heuristic never removes: the first four and the last two."""
    return sorted({0, 1, 2, 3, num_layers - 2, num_layers - 1} & set(range(num_layers)))


def removable_order(order: list[int], protected: list[int], num_layers: int) -> list[int]:
    """``order`` without the protected blocks, cut so that at least one block always stays (a model
    without decoder layers is not a language model; our rule, the official scripts remove far fewer)."""
    return [i for i in order if i not in protected][: num_layers - 1]


def check_block_ratio(adapter: ModelAdapter, target_ratio: float, protected: list[int], method: str) -> None:
    """Raise if no choice of removable blocks reaches ``target_ratio`` (checked before any scoring).

    The largest removable parameter count is the sum of the largest removable blocks, at most
    ``num_layers - 1`` of them and never a protected one; a ratio above that cannot be reached by any order.
    """
    n = adapter.num_layers
    allowed = [i for i in range(n) if i not in protected]
    sizes = sorted((removal_params(adapter, Removal(i, "block")) for i in allowed), reverse=True)[: n - 1]
    total = decoder_params(adapter.model)
    reachable = sum(sizes) / total
    if not reaches(sum(sizes), total, float(target_ratio)):
        raise PrunebenchError(
            f"{method}: target ratio {target_ratio} needs more blocks than may be removed: "
            f"{len(sizes)} of {n} blocks are removable (protected: {protected}) and they hold only "
            f"{reachable:.4f} of the decoder parameters"
        )


def plan_from_block_order(
    adapter: ModelAdapter, order: list[int], target_ratio: float, method: str, params: dict, notes: dict
) -> PruningPlan:
    """The shortest prefix of ``order`` (whole blocks) reaching ``target_ratio``, with provenance notes."""
    plan = plan_from_order(
        adapter,
        [Removal(layer, "block") for layer in order],
        target_ratio,
        method=method,
        params=params,
        base_model=str(getattr(adapter.model.config, "name_or_path", "") or ""),
    )
    plan.notes = {**(plan.notes or {}), **notes}
    return plan


def check_scores_match(scores_len: int, adapter: ModelAdapter, method: str) -> None:
    """Scores carry one value per dense layer; anything else belongs to another model."""
    if scores_len != adapter.num_layers:
        raise PrunebenchError(
            f"{method}: scores have {scores_len} blocks but the model has {adapter.num_layers} "
            "decoder layers; scores must come from this (dense) model"
        )


@dataclass
class LayerCalls:
    """What the model passed to each decoder layer in one dense forward: the hidden state entering
    layer 0 and, per layer, every other argument (masks, rotary embeddings, positions)."""

    first_input: torch.Tensor
    kwargs: list[dict[str, Any]]


def _hidden_arg(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _hidden_out(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def capture_layer_calls(adapter: ModelAdapter, input_ids: torch.Tensor) -> LayerCalls:
    """Run the dense model once and record each decoder layer's call, so that any chain of layers can
    be replayed later exactly as the model would call them (no cache)."""
    captured: list[dict[str, Any]] = [{} for _ in adapter.layers]
    first: list[torch.Tensor] = []

    def recorder(index: int):
        def hook(module, args, kwargs):
            if index == 0:
                first.append(_hidden_arg(args, kwargs))
            captured[index] = {k: v for k, v in kwargs.items() if k != "hidden_states"}

        return hook

    handles = [
        layer.register_forward_pre_hook(recorder(i), with_kwargs=True)
        for i, layer in enumerate(adapter.layers)
    ]
    try:
        adapter.model.model(input_ids=input_ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return LayerCalls(first[0], captured)


def run_layer(adapter: ModelAdapter, calls: LayerCalls, index: int, hidden: torch.Tensor) -> torch.Tensor:
    """Decoder layer ``index`` applied to ``hidden`` with the arguments the dense model gave it."""
    return _hidden_out(adapter.layers[index](hidden, **calls.kwargs[index]))


class BlockRanking(Method):
    """One score per dense layer, a stable ascending order, the shortest prefix reaching the ratio.

    Subclasses set ``score_key`` and ``measure(runner, calibration, batch_size)`` (``runner``: a
    :class:`~prunebench.models.streaming.Runner`; a method that streams sets ``no_streaming = None``); they may protect
    blocks (:meth:`protected`) and label the score meta and plan notes (:meth:`score_labels`,
    :meth:`plan_labels`). The config needs a ``batch_size``."""

    families = ("llama", "mistral", "qwen2")
    score_key: str
    measure: Callable[[Runner, torch.Tensor, int], torch.Tensor]

    def protected(self, num_layers: int, config: MethodConfig) -> list[int]:
        """Blocks that are never removed (none by default)."""
        return []

    def score_labels(self) -> dict[str, Any]:
        """Entries put before the common ones in the score meta."""
        return {}

    def plan_labels(self, config: MethodConfig, protected: list[int]) -> dict[str, Any]:
        """Entries put before ``block_order`` in the plan notes."""
        return {}

    def check_ratio(self, model, target_ratio: float, config: MethodConfig) -> None:
        super().check_ratio(model, target_ratio, config)
        adapter = get_adapter(model)
        check_block_ratio(adapter, target_ratio, self.protected(adapter.num_layers, config), self.name)

    def score(self, model, calibration: torch.LongTensor, config: MethodConfig) -> Scores:
        return self.score_layers(ResidentRunner(model), calibration, config)

    def score_layers(self, runner: Runner, calibration: torch.LongTensor, config: MethodConfig) -> Scores:
        check_calibration(calibration)
        adapter = get_adapter(runner.model)
        values = self.measure(runner, calibration, config.batch_size)
        return Scores(
            tensors={self.score_key: values},
            meta={
                **self.score_labels(),
                "num_layers": adapter.num_layers,
                "order": ascending_order(values),
                "nsamples": int(calibration.shape[0]),
                "seqlen": int(calibration.shape[1]),
            },
        )

    def select(self, scores: Scores, model, target_ratio: float, config: MethodConfig) -> PruningPlan:
        adapter = get_adapter(model)
        values = scores.tensors[self.score_key]
        check_scores_match(len(values), adapter, self.name)
        protected = self.protected(adapter.num_layers, config)
        check_block_ratio(adapter, target_ratio, protected, self.name)
        order = ascending_order(values)
        return plan_from_block_order(
            adapter,
            removable_order(order, protected, adapter.num_layers),
            target_ratio,
            method=self.name,
            params=config.to_dict(),
            notes={**self.plan_labels(config, protected), "block_order": order},
        )
