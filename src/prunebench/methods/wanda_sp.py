"""Wanda-sp, the structured Wanda baseline as coded in FLAP's repository (``prune_wanda_sp``).

1. Calibration: C4 (``en/c4-train.00000-of-01024``), 128 windows of 128 tokens, seed 0. (The
   official loop also forwards all-zero buffer rows up to ``--nsamples``; they add nothing to the
   statistics, so we forward only the real samples.)
2. Sequential, layer by layer: the inputs of layer ``i`` are the outputs of the already *pruned*
   layers ``0..i−1``. Layer ``i`` is first run dense with hooks on the inputs of ``o_proj`` and
   ``down_proj`` (``WrappedGPT.add_batch``: ``ρ_j = (1/N) Σ_n Σ_t x²``), then pruned, then run again
   to produce the next layer's inputs.
3. Score of input channel ``j``: ``mean_i |W_ij| · sqrt(ρ_j)``; a head's score is the sum over its
   channels.
4. Uniform, with the official counts (:mod:`~prunebench.methods.width_budget`): with the pruning ratio
   ``r`` every layer loses ``int(r·H)`` heads and ``int(m·r)`` channels (**floor**, as
   ``int(args.pruning_ratio*layer.self_attn.num_heads)`` and ``int(W_metric.numel()*args.pruning_ratio)``),
   keeping "score ≥ τ" with ``τ`` the sorted value at that index (ties keep more); no bias compensation.
   With ``H`` units per layer, any ``r < 1/H`` removes no attention at all.

Because of step 2 the statistics of every layer after the first depend on the ratio. ``score()``
therefore only fixes and stores the calibration tokens; ``select()`` runs the whole sequential pass
(one dense and one pruned forward of every layer over the calibration set) for each ratio. This is
the faithful algorithm; ``select()`` is not cheap for this method. ``prunebench prune --stream`` runs
that pass with the model in CPU memory and one layer at a time on the device (``select_streamed``).

Extensions (also in ``plan.notes["extensions"]``): **GQA** -- heads are pruned by KV group (one KV
head with its query heads), a group's score is the sum over its ``g·hd`` o_proj channels, and the
count is ``int(r·H_kv)`` groups (the official rule for MHA). **Decoder budget** (``budget=decoder``,
default) -- ``r`` is the native ratio whose floored counts give the decoder-parameter ratio closest to
the study ratio (:func:`~prunebench.methods.width_budget.uniform_counts`; a miss above its tolerance
of 0.02 is refused); ``budget=native`` passes the study ratio as ``r`` itself. The plan notes record
``r`` (``native_pruning_ratio``) and the KV groups and channels removed per layer. **Aligned widths**
(``round_to`` > 1; default 1, off): kept widths rounded to multiples
(:mod:`~prunebench.methods.width_budget`), a deviation from the official code, labelled in the plan notes.

Fidelity: on a random MHA Llama with ``head_dim`` 128 the kept heads and channels equal those of the
official ``prune_wanda_sp`` at every ratio tried (docs/fidelity/wanda-sp.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.methods import Method, MethodConfig, Scores, register
from prunebench.methods.base import calibration_rows_scores
from prunebench.methods.channel_stats import InputStats, attach, group_channels
from prunebench.methods.flap import keep_uniform, width_plan
from prunebench.methods.width_budget import check_budget, check_round_to, round_to_deviation, uniform_counts
from prunebench.models import get_adapter
from prunebench.models.adapter import ModelAdapter
from prunebench.models.streaming import LayerProbe, ResidentLayers, ResidentRunner, Runner, StreamingRunner
from prunebench.plan import PruningPlan

EXTENSIONS = [
    "GQA: heads pruned by KV group, group score = sum over its o_proj channels",
    "any head_dim / layer count / existing biases",
]


@dataclass(frozen=True)
class WandaSpConfig(MethodConfig):
    """Wanda-sp's defaults in FLAP's repository (``prune_wanda_sp``)."""

    calib_dataset: str = "c4"
    nsamples: int = 128
    seqlen: int = 128
    seed: int = 0
    budget: str = "decoder"
    batch_size: int = 8
    round_to: int = 1  # 1 = official counts; >1 aligns kept widths (deviation, see width_budget)

    def check(self) -> None:
        super().check()
        check_budget("wanda-sp", self.budget)
        check_round_to("wanda-sp", self.round_to)
        if self.batch_size < 1:
            raise PrunebenchError(f"wanda-sp: batch_size must be at least 1, got {self.batch_size}")


def wanda_scores(stats: InputStats, weight: torch.Tensor) -> torch.Tensor:
    """``mean_i |W_ij| · sqrt(ρ_j)`` for every input channel ``j``."""
    w = weight.detach().to("cpu", torch.float64)
    return (w.abs() * stats.mean_sq_norm().sqrt()[None, :]).mean(dim=0)


def _masked_copy(layer: nn.Module, attn_cols: torch.Tensor, mlp_cols: torch.Tensor) -> nn.Module:
    """A copy of ``layer`` whose removed o_proj / down_proj input columns are zero (same output as slicing)."""
    pruned = copy.deepcopy(layer)
    with torch.no_grad():
        pruned.self_attn.o_proj.weight[:, ~attn_cols] = 0
        pruned.mlp.down_proj.weight[:, ~mlp_cols] = 0
    return pruned


@register("wanda-sp")
class WandaSp(Method):
    """Wanda-sp (FLAP repo baseline): |W|·‖X‖ channel scores, uniform per layer, sequential, no compensation.

    See the module docstring for the mapping to the official code and why ``select()`` is expensive.
    """

    Config = WandaSpConfig
    families = ("llama", "mistral", "qwen2")
    ratio_dependent = True

    no_streaming = None
    streaming_note = (
        "scoring stores the tokens; its per-ratio pass streams at prune time (prune --stream --scores)"
    )

    def score(self, model: nn.Module, calibration: torch.Tensor, config: WandaSpConfig) -> Scores:
        """Check the inputs and store the calibration tokens (the only ratio-independent part)."""
        return self.score_layers(ResidentRunner(model), calibration, config)

    def score_layers(self, runner: Runner, calibration: torch.Tensor, config: WandaSpConfig) -> Scores:
        """:meth:`score` on any runner: no weights are read (the pass runs in :meth:`select`)."""
        return calibration_rows_scores("wanda-sp", runner.model, calibration)

    def check_ratio(self, model: nn.Module, target_ratio: float, config: WandaSpConfig) -> None:
        """A ratio must lie in [0, 1) and be realisable with the official uniform per-layer counts."""
        super().check_ratio(model, target_ratio, config)
        uniform_counts(get_adapter(model), target_ratio, config.budget, "wanda-sp", config.round_to)

    def select(
        self, scores: Scores, model: nn.Module, target_ratio: float, config: WandaSpConfig
    ) -> PruningPlan:
        """The sequential pass: score, prune (by masking a copy) and re-run each layer in turn."""
        device = get_adapter(model).embed_tokens.weight.device
        return self._select(
            scores, model, target_ratio, config, StreamingRunner(ResidentLayers(model), device)
        )

    def select_streamed(
        self,
        scores: Scores,
        model: nn.Module,
        target_ratio: float,
        config: WandaSpConfig,
        device: torch.device,
        device_budget: int | None = None,
    ) -> PruningPlan:
        """The sequential pass with ``model`` in CPU memory and one layer at a time on ``device``: the same
        plan as :meth:`select`; the plan's notes record the pass (``streaming``)."""
        runner = StreamingRunner(ResidentLayers(model), device, device_budget)
        plan = self._select(scores, model, target_ratio, config, runner)
        plan.notes["streaming"] = runner.record.to_dict()
        return plan

    def _select(
        self,
        scores: Scores,
        model: nn.Module,
        target_ratio: float,
        config: WandaSpConfig,
        runner: StreamingRunner,
    ) -> PruningPlan:
        self.check_ratio(model, target_ratio, config)
        adapter = get_adapter(model)
        if scores.meta.get("method") != "wanda-sp" or "input_ids" not in scores.tensors:
            raise PrunebenchError(f"these scores were made by {scores.meta.get('method')!r}, not by wanda-sp")
        if not adapter.is_dense():
            raise PrunebenchError("wanda-sp prunes a dense model, but this model is already pruned")
        counts = uniform_counts(adapter, target_ratio, config.budget, "wanda-sp", config.round_to)
        notes: dict[str, Any] = {
            "extensions": list(EXTENSIONS),
            "target_ratio": target_ratio,
            "budget": config.budget,
            **counts.notes(),
        }
        if config.round_to > 1:
            notes["deviations"] = [round_to_deviation(config.round_to)]
        attn_keep, mlp_keep = self._sequential(
            adapter,
            runner,
            scores.tensors["input_ids"],
            counts.kv_groups_removed,
            counts.channels_removed,
            config,
        )
        return width_plan(adapter, "wanda-sp", config, target_ratio, attn_keep, mlp_keep, notes)

    def _sequential(
        self,
        adapter: ModelAdapter,
        runner: StreamingRunner,
        input_ids: torch.Tensor,
        remove_heads: int,
        remove_channels: int,
        config: WandaSpConfig,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        width = adapter.group_size * adapter.head_dim
        attn_keep, mlp_keep = [], []
        if remove_heads == 0 and remove_channels == 0:
            full = torch.ones(adapter.num_layers, adapter.num_kv_heads, dtype=torch.bool)
            return full, torch.ones(adapter.num_layers, adapter.intermediate_size, dtype=torch.bool)
        stats: dict[str, InputStats] = {}

        def hooks(i: int, layer: nn.Module) -> list:
            o_proj, down_proj = layer.self_attn.o_proj, layer.mlp.down_proj
            stats["attn"], stats["mlp"] = InputStats(o_proj.in_features), InputStats(down_proj.in_features)
            return [attach(o_proj, stats["attn"]), attach(down_proj, stats["mlp"])]

        def keep(i: int, layer: nn.Module) -> None:
            o_proj, down_proj = layer.self_attn.o_proj, layer.mlp.down_proj
            heads = group_channels(wanda_scores(stats["attn"], o_proj.weight), width).sum(dim=-1)
            attn_keep.append(keep_uniform(heads[None], remove_heads)[0])
            mlp_keep.append(
                keep_uniform(wanda_scores(stats["mlp"], down_proj.weight)[None], remove_channels)[0]
            )

        def pruned(i: int, layer: nn.Module) -> nn.Module:
            return _masked_copy(layer, attn_keep[-1].repeat_interleave(width), mlp_keep[-1])

        probe = LayerProbe(attach=hooks, finish=keep, carry=pruned)
        runner.run(input_ids, config.batch_size, probe, "wanda-sp sequential pass")
        return torch.stack(attn_keep), torch.stack(mlp_keep)
