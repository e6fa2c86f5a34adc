"""Magnitude-sp: structured magnitude pruning of KV groups and FFN channels, uniform per layer.

The data-free baseline of FLAP's repository (``prune_magnitude_sp`` in ``CASIA-IVA-Lab/FLAP``;
CFSP's repository has an MLP-only copy). Scores, as coded there:

* FFN channel ``j``: the L2 norm of column ``j`` of ``down_proj`` (the weights it feeds).
* Attention head: the sum of the L2 norms of its ``head_dim`` columns of ``o_proj``.
  Extension (GQA, any ``head_dim``): we remove whole KV groups (one KV head and its query heads),
  scored by the sum over the group's ``g * head_dim`` ``o_proj`` columns; for MHA this is the
  official head score.

Counts (:mod:`~prunebench.methods.width_budget`): with the pruning ratio ``r`` every layer loses
``int(r * H)`` heads and ``int(m * r)`` channels, both **floored** as in the official code
(``int(args.pruning_ratio*layer.self_attn.num_heads)``, ``int(W_metric.numel()*args.pruning_ratio)``);
for GQA, ``int(r * H_kv)`` KV groups (extension). ``budget=decoder`` (default) picks the ``r`` whose
floored counts give the decoder ratio closest to the study ratio (refused beyond a 0.02 miss);
``budget=native`` uses the study ratio as ``r``. The plan notes record ``r`` and the per-layer counts.
Deviation: the official code keeps every structure whose score ties the threshold; we keep exactly
the counted number, ties going to the lower index. ``round_to`` > 1 (default 1, off) rounds the kept
widths to multiples (:mod:`~prunebench.methods.width_budget`), a deviation labelled in the plan notes.

Fidelity: on a random MHA Llama with ``head_dim`` 128 the kept heads and channels equal those of the
official ``prune_magnitude_sp`` at every ratio tried (docs/fidelity/wanda-sp.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prunebench.errors import PrunebenchError
from prunebench.methods import Method, MethodConfig, Scores, register
from prunebench.methods.cfsp import top_indices
from prunebench.methods.width_budget import check_budget, check_round_to, round_to_deviation, uniform_counts
from prunebench.models import get_adapter
from prunebench.models.counting import plan_decoder_ratio
from prunebench.models.streaming import LayerProbe, ResidentRunner, Runner
from prunebench.plan import LayerPlan, PruningPlan


@dataclass(frozen=True)
class MagnitudeSpConfig(MethodConfig):
    """magnitude-sp reads only the weights (the calibration fields go unused).

    ``budget``: ``decoder`` (the study ratio is a decoder-parameter fraction) or ``native`` (it is the
    official ``--pruning_ratio`` itself).
    """

    budget: str = "decoder"
    round_to: int = 1  # 1 = official counts; >1 aligns kept widths (deviation, see width_budget)

    def check(self) -> None:
        super().check()
        check_budget("magnitude-sp", self.budget)
        check_round_to("magnitude-sp", self.round_to)


def channel_scores(down_proj_weight: torch.Tensor) -> torch.Tensor:
    """Column L2 norms of ``down_proj`` (``[d, m]`` -> ``[m]``)."""
    return down_proj_weight.float().norm(dim=0)


def group_scores(o_proj_weight: torch.Tensor, num_kv_heads: int) -> torch.Tensor:
    """Sum of ``o_proj`` column L2 norms over each KV group's query-head columns (``[kv]``).

    Query head ``h`` uses KV head ``h // g``, so group ``k`` owns the contiguous columns
    ``[k * g * hd, (k + 1) * g * hd)``.
    """
    return o_proj_weight.float().norm(dim=0).reshape(num_kv_heads, -1).sum(dim=1)


@register("magnitude-sp")
class MagnitudeSp(Method):
    """Magnitude-sp baseline: KV groups by o_proj and channels by down_proj column norms, uniform per layer."""

    Config = MagnitudeSpConfig
    families = ("llama", "mistral", "qwen2")
    uses_calibration = False

    no_streaming = None

    def score(self, model, calibration: torch.Tensor | None, config: MagnitudeSpConfig) -> Scores:
        """Weight norms of the dense model; the calibration samples are not used."""
        return self.score_layers(ResidentRunner(model), calibration, config)

    def score_layers(
        self, runner: Runner, calibration: torch.Tensor | None, config: MagnitudeSpConfig
    ) -> Scores:
        """:meth:`score` reading one layer at a time (resident or streamed: the same norms)."""
        adapter = get_adapter(runner.model)
        for i in range(adapter.num_layers):
            if (
                adapter.kv_heads(i) != adapter.num_kv_heads
                or adapter.mlp_channels(i) != adapter.intermediate_size
            ):
                raise PrunebenchError(f"magnitude-sp scores a dense model; layer {i} is already pruned")
        groups = torch.empty(adapter.num_layers, adapter.num_kv_heads)
        channels = torch.empty(adapter.num_layers, adapter.intermediate_size)

        def group_norms(i: int, layer: torch.nn.Module) -> None:
            groups[i] = group_scores(layer.self_attn.o_proj.weight, adapter.num_kv_heads).cpu()

        def channel_norms(i: int, layer: torch.nn.Module) -> None:
            channels[i] = channel_scores(layer.mlp.down_proj.weight).cpu()

        with torch.no_grad():
            runner.scan(
                LayerProbe(finish_attention=group_norms, finish=channel_norms), "magnitude-sp weights"
            )
        meta = {
            "method": "magnitude-sp",
            "keys": {
                "group_score": "sum of o_proj column L2 norms per KV group [layers, kv_heads]",
                "channel_score": "down_proj column L2 norm per FFN channel [layers, intermediate]",
            },
        }
        return Scores(tensors={"group_score": groups, "channel_score": channels}, meta=meta)

    def check_ratio(self, model, target_ratio: float, config: MagnitudeSpConfig) -> None:
        """A ratio must lie in [0, 1) and be realisable with the official uniform per-layer counts."""
        super().check_ratio(model, target_ratio, config)
        uniform_counts(get_adapter(model), target_ratio, config.budget, "magnitude-sp", config.round_to)

    def select(self, scores: Scores, model, target_ratio: float, config: MagnitudeSpConfig) -> PruningPlan:
        """Keep the same number of top KV groups and top channels in every layer."""
        adapter = get_adapter(model)
        counts = uniform_counts(adapter, target_ratio, config.budget, "magnitude-sp", config.round_to)
        groups, channels = scores.tensors["group_score"], scores.tensors["channel_score"]
        expected = (adapter.num_layers, adapter.num_kv_heads, adapter.intermediate_size)
        if (groups.shape[0], groups.shape[1], channels.shape[1]) != expected:
            raise PrunebenchError(
                f"magnitude-sp: scores for (layers, kv_heads, channels) = "
                f"{(groups.shape[0], groups.shape[1], channels.shape[1])}, the model has {expected}"
            )
        kv_keep = adapter.num_kv_heads - counts.kv_groups_removed
        ch_keep = adapter.intermediate_size - counts.channels_removed
        layers = {
            i: LayerPlan(
                kv_heads=None if kv_keep == adapter.num_kv_heads else top_indices(groups[i], kv_keep),
                mlp_channels=None
                if ch_keep == adapter.intermediate_size
                else top_indices(channels[i], ch_keep),
            )
            for i in range(adapter.num_layers)
        }
        plan = PruningPlan(
            base_model=getattr(model.config, "_name_or_path", "") or "",
            method="magnitude-sp",
            params=config.to_dict(),
            target_ratio=target_ratio,
            layers=layers,
        )
        plan.notes = {
            "target_ratio": target_ratio,
            "budget": config.budget,
            **counts.notes(),
            "achieved_decoder_ratio": plan_decoder_ratio(adapter, plan),
            "extensions": ["heads removed by whole KV group (GQA), scored by the group's o_proj columns"],
            "deviations": ["exactly the counted structures are kept; ties go to the lower index"]
            + ([round_to_deviation(config.round_to)] if config.round_to > 1 else []),
        }
        return plan
