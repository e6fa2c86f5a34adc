"""FLAP (An et al., AAAI 2024; official code CASIA-IVA-Lab/FLAP): fluctuation-based head and channel pruning.

Retraining-free width pruning of attention heads and MLP intermediate channels with bias
compensation. Each step below names the part of the official code (``lib/prune.py``,
``lib/layerwrapper.py``) it reproduces; extensions of ours are marked **extension**.

1. Calibration (``prune_flap``): WikiText-2 train, 1024 windows of 128 tokens, seed 0. Every
   layer sees *dense* activations (the official code prunes only after all layers are scored), so
   one forward pass of the dense model with hooks gives the same statistics as its layer-by-layer
   loop.
2. Fluctuation statistics (``BiasGPT.add_batch``), on the inputs of ``o_proj`` and ``down_proj``:
   running mean ``μ`` and the fluctuation ``F`` exactly as coded — the first sample contributes
   nothing and both deviation factors use the already-updated mean (aliased tensor); see
   :class:`~prunebench.methods.channel_stats.InputStats` for the closed form.
3. Metrics (``metrics`` dict): ``WIFV`` = ``F_j · Σ_i W_ij²`` (default), ``IFV`` = ``F_j``, ``WIFN`` =
   ``mean_i |W_ij| · sqrt(ρ_j)``; the attention (o_proj) score is squared, as coded.
4. ``AL-AM`` (default): per-layer z-score (unbiased std) of the o_proj and down_proj channel
   scores; a head's score is the mean of its standardised channels; all heads and channels of all
   layers are ranked together and cut at one global threshold ``τ = sorted[k*]`` with
   ``k* = argmin_k |cumsum_k(w) − (1−r)·Σw|`` and the strict rule "keep iff score > τ". A layer may
   lose every head or every channel; ours: the cut keeps at least the best-ranked structure, so some
   decoder sublayer always remains. ``UL-UM``: the same number of heads (ranked by the *sum* of
   their raw squared o_proj scores) and of channels pruned in every layer, keeping "score ≥ τ"; the
   counts are floored, ``int(r·H)`` heads and ``int(m·r)`` channels
   (:mod:`~prunebench.methods.width_budget`).
5. Bias compensation (``compress``): ``B = W · ((1 − M) ⊙ μ)`` from the full weight, added to the
   ``o_proj``/``down_proj`` bias (returned in ``PruningPlan.compensation``; the core adds it to
   an existing bias, e.g. Qwen2, or keeps it as a constant when a whole sublayer goes). We store
   ``μ`` in float64 where the official code casts it to fp16 (precision only). Modules that lose
   nothing get no bias (the official code adds a zero bias everywhere). ``bias_compensation=false``
   leaves the biases out (an **ablation option** of ours: the official code always compensates; the
   paper's ablation compares with and without it), so the effect of compensation can be measured.

Extensions (also listed in ``plan.notes["extensions"]``):
- **GQA**: a head is a KV group (one KV head with its ``g`` query heads); its score is the mean of
  the standardised scores of its ``g·hd`` o_proj channels (UL-UM: their sum), and its weight in the
  global search is ``(2g+2)·hd/3`` channel-equivalents, truncated to an integer as the official
  integer weight tensor truncates ``512/3`` to 170 (MHA, ``hd = 128``). Any ``head_dim``, layer
  count, and existing biases are handled.
- **Decoder budget** (``budget=decoder``, default): the study ratio is the fraction of
  decoder-layer parameters removed. AL-AM: we keep FLAP's ranking and strict threshold but choose the
  cut so the *kept set* has the budget, counting real parameters per KV group and channel (biases
  included), then correct once for norms and compensation biases; the cut moves one ranked structure
  at a time, so the achieved ratio can miss the target by about one structure's share of the decoder
  when a KV group sits at the cut (≈0.7 % for the demo model, ≈0.03 % for LLaMA-7B). UL-UM: the
  official floored counts for the native ratio ``r`` whose decoder ratio comes closest to the target
  (:func:`~prunebench.methods.width_budget.uniform_counts`, refused beyond a 0.02 miss); ``r`` and the
  per-layer counts are in the plan notes. ``budget=native`` passes the ratio to FLAP as its own
  ``--pruning_ratio`` (the official formulas above: integer weights and the nearest cumulative weight
  for AL-AM, ``int(r·H_kv)``/``int(m·r)`` for UL-UM); the plan notes record target, native and achieved.

Deviation (off by default): ``round_to`` > 1 rounds every layer's kept channel count (and KV-group count
where ``head_dim`` is not a multiple) to a multiple of ``round_to``, keeping the best-scored ones
(AL-AM: :func:`align_masks` after the threshold, inside the decoder-budget search, so the achieved
ratio still tracks the target; UL-UM: the aligned uniform counts). The official code keeps whatever
its threshold gives; the plan notes label it under ``deviations``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prunebench.errors import PrunebenchError
from prunebench.methods import Method, MethodConfig, Scores, register
from prunebench.methods.channel_stats import InputStats, attach, by_columns, group_channels
from prunebench.methods.width_budget import (
    align_count,
    check_budget,
    check_round_to,
    kv_unit,
    round_to_deviation,
    uniform_counts,
)
from prunebench.models import get_adapter
from prunebench.models.adapter import ModelAdapter
from prunebench.models.counting import decoder_params, kv_group_params, mlp_channel_params, plan_decoder_ratio
from prunebench.models.streaming import LayerProbe, ResidentRunner, Runner
from prunebench.plan import LayerPlan, PruningPlan

METRICS = ("WIFV", "IFV", "WIFN")
STRUCTURES = ("AL-AM", "UL-UM")
EXTENSIONS = [
    "GQA: heads pruned by KV group, group score = mean of standardised o_proj channel scores",
    "GQA: group weight in the global search = floor((2g+2)*head_dim/3) channel-equivalents",
    "any head_dim / layer count / existing q,k,v,o biases",
]


@dataclass(frozen=True)
class FlapConfig(MethodConfig):
    """FLAP's official defaults (``scripts/llama_7b.sh`` and ``main.py``)."""

    calib_dataset: str = "wikitext2"
    nsamples: int = 1024
    seqlen: int = 128
    seed: int = 0
    metric: str = "WIFV"
    structure: str = "AL-AM"
    budget: str = "decoder"
    batch_size: int = 8
    bias_compensation: bool = True
    round_to: int = 1  # 1 = official; >1 aligns kept widths per layer (deviation, see align_masks)

    def check(self) -> None:
        super().check()
        check_round_to("flap", self.round_to)
        if self.metric not in METRICS:
            raise PrunebenchError(f"flap: metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.structure not in STRUCTURES:
            raise PrunebenchError(
                f"flap: structure must be one of {', '.join(STRUCTURES)}, got {self.structure!r}"
            )
        check_budget("flap", self.budget)
        if self.batch_size < 1:
            raise PrunebenchError(f"flap: batch_size must be at least 1, got {self.batch_size}")
        if self.nsamples < 2:
            raise PrunebenchError(
                f"flap needs nsamples >= 2 (its fluctuation ignores the first), got {self.nsamples}"
            )


def channel_metric(metric: str, stats: InputStats, weight: torch.Tensor) -> torch.Tensor:
    """Per-input-channel score of a linear layer (the official ``metrics`` dict), in float64 on the CPU."""
    if metric == "IFV":
        return stats.fluctuation()
    if metric == "WIFV":
        return stats.fluctuation() * by_columns(weight, lambda w, _cols: w.pow(2).sum(dim=0))
    norm = stats.mean_sq_norm().sqrt()
    return by_columns(weight, lambda w, cols: (w.abs() * norm[None, cols]).mean(dim=0))


def standardize(scores: torch.Tensor) -> torch.Tensor:
    """Z-score each row (one layer) with the unbiased std, as the official ``standarlization``."""
    std = scores.std(dim=1, keepdim=True)
    constant = (std == 0).flatten().nonzero().flatten().tolist()
    if constant:
        raise PrunebenchError(f"flap: layers {constant} have constant scores; they cannot be standardised")
    return (scores - scores.mean(dim=1, keepdim=True)) / std


def head_weight(group_size: int, head_dim: int) -> int:
    """Channel-equivalents of one KV group, truncated like the official integer tensor (170 for MHA, hd=128)."""
    return (2 * group_size + 2) * head_dim // 3


def rank(attn: torch.Tensor, mlp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All group and channel scores, sorted descending (stable); returns ``(sorted, order)``.

    ``order`` indexes the concatenation ``[attn.flatten(), mlp.flatten()]``.
    """
    return torch.sort(torch.cat([attn.flatten(), mlp.flatten()]), descending=True, stable=True)


def native_cut(order: torch.Tensor, n_attn: int, weight: int, ratio: float) -> int:
    """FLAP's ``k* = argmin |cumsum(w) − (1−r)·Σw|`` with integer weights (heads ``weight``, channels 1).

    Ours: at least 1, since ``k = 0`` keeps no structure and so leaves no decoder sublayer.
    """
    w = torch.ones_like(order)
    w[order < n_attn] = weight
    return max(1, int(torch.argmin((w.cumsum(0) - w.sum() * (1 - ratio)).abs())))


def budget_cut(sorted_costs: torch.Tensor, remove: float) -> int:
    """Number ``k ≥ 1`` of best-ranked structures to keep so the rest weigh closest to ``remove`` parameters.

    Keeping none is never chosen: it would leave no decoder sublayer.
    """
    kept = sorted_costs.cumsum(0)
    return 1 + int(torch.argmin((kept[-1] - kept - remove).abs()))


def keep_above(
    attn: torch.Tensor, mlp: torch.Tensor, sorted_scores: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of the structures scoring strictly above ``τ = sorted[k]`` (all kept when ``k`` is past the end)."""
    if k >= sorted_scores.numel():
        return torch.ones_like(attn, dtype=torch.bool), torch.ones_like(mlp, dtype=torch.bool)
    tau = sorted_scores[k]
    return attn > tau, mlp > tau


def keep_uniform(scores: torch.Tensor, remove: int) -> torch.Tensor:
    """Per row, keep scores ``≥`` the ``remove``-th smallest (the official UL-UM rule); all go if ``remove ≥ n``."""
    if remove >= scores.shape[1]:
        return torch.zeros_like(scores, dtype=torch.bool)
    tau = torch.sort(scores, dim=1, stable=True).values[:, remove : remove + 1]
    return scores >= tau


def _top(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Mask of the ``count`` highest scores (ties to the lower index)."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask[torch.sort(scores, descending=True, stable=True).indices[:count]] = True
    return mask


def align_masks(
    attn: torch.Tensor, mlp: torch.Tensor, attn_keep: torch.Tensor, mlp_keep: torch.Tensor, units: tuple
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per layer, round the kept KV-group and channel counts to multiples of ``units = (kv, channel)``
    (:func:`~prunebench.methods.width_budget.align_count`) and keep that many of the best-scored ones.

    A deviation from FLAP's code (``round_to`` > 1), which keeps whatever its threshold gives.
    """
    attn_keep, mlp_keep = attn_keep.clone(), mlp_keep.clone()
    for layer in range(attn.shape[0]):
        for scores, keep, unit in ((attn, attn_keep, units[0]), (mlp, mlp_keep, units[1])):
            count = align_count(int(keep[layer].sum()), unit, keep.shape[1])
            keep[layer] = _top(scores[layer], count)
    return attn_keep, mlp_keep


def compensation(
    adapter: ModelAdapter, attn_keep: torch.Tensor, mlp_keep: torch.Tensor, scores: Scores
) -> dict[int, dict[str, torch.Tensor]]:
    """``B = W · ((1 − M) ⊙ μ)`` for every o_proj / down_proj that lost input channels (full weight)."""
    width = adapter.group_size * adapter.head_dim
    out: dict[int, dict[str, torch.Tensor]] = {}
    for layer in range(adapter.num_layers):
        parts = {}
        ch_keep = attn_keep[layer].repeat_interleave(width)
        pairs = (
            ("o_proj", adapter.attention(layer).o_proj, ch_keep, scores.tensors["attn_mean"][layer]),
            ("down_proj", adapter.mlp(layer).down_proj, mlp_keep[layer], scores.tensors["mlp_mean"][layer]),
        )
        for name, proj, keep, mean in pairs:
            if not bool(keep.all()):
                removed = (~keep).to(torch.float64) * mean
                parts[name] = (proj.weight.detach().to("cpu", torch.float64) @ removed).to(torch.float32)
        if parts:
            out[layer] = parts
    return out


def width_plan(
    adapter: ModelAdapter,
    method: str,
    config: MethodConfig,
    target_ratio: float,
    attn_keep: torch.Tensor,
    mlp_keep: torch.Tensor,
    notes: dict,
) -> PruningPlan:
    """The plan keeping ``attn_keep`` [L, H_kv] KV groups and ``mlp_keep`` [L, m] channels (no bias
    compensation), its achieved decoder ratio added to ``notes``."""
    plan = PruningPlan(
        base_model=adapter.name,
        method=method,
        params=config.to_dict(),
        target_ratio=target_ratio,
        layers=layer_plans(attn_keep, mlp_keep),
        notes=notes,
    )
    notes["achieved_decoder_ratio"] = plan_decoder_ratio(adapter, plan)
    return plan


def layer_plans(attn_keep: torch.Tensor, mlp_keep: torch.Tensor) -> dict[int, LayerPlan]:
    """Per-layer kept KV groups and channels; ``None`` where a part is kept whole."""
    plans = {}
    for layer in range(attn_keep.shape[0]):
        heads, channels = attn_keep[layer], mlp_keep[layer]
        lp = LayerPlan(
            kv_heads=None if bool(heads.all()) else heads.nonzero().flatten().tolist(),
            mlp_channels=None if bool(channels.all()) else channels.nonzero().flatten().tolist(),
        )
        if lp.kv_heads is not None or lp.mlp_channels is not None:
            plans[layer] = lp
    return plans


@register("flap")
class Flap(Method):
    """FLAP: fluctuation-scored heads (by KV group) and MLP channels, global threshold, bias compensation.

    See the module docstring for the step-by-step mapping to the official code.
    """

    Config = FlapConfig
    families = ("llama", "mistral", "qwen2")

    no_streaming = None

    def score(self, model: torch.nn.Module, calibration: torch.Tensor, config: FlapConfig) -> Scores:
        """Fluctuation scores and input means of every o_proj and down_proj (ratio-independent)."""
        return self.score_layers(ResidentRunner(model), calibration, config)

    def score_layers(self, runner: Runner, calibration: torch.Tensor, config: FlapConfig) -> Scores:
        """:meth:`score` with the model resident or streamed layer by layer (same scores)."""
        adapter = get_adapter(runner.model)
        _check_inputs(adapter, calibration)
        stats: dict[tuple[int, str], InputStats] = {}
        attn: list[torch.Tensor] = [torch.empty(0)] * adapter.num_layers
        mlp = list(attn)

        def hooks(layer: int, module: torch.nn.Module) -> list:
            stats[layer, "attn"] = InputStats(adapter.num_heads * adapter.head_dim)
            stats[layer, "mlp"] = InputStats(adapter.intermediate_size)
            return [
                attach(module.self_attn.o_proj, stats[layer, "attn"]),
                attach(module.mlp.down_proj, stats[layer, "mlp"]),
            ]

        def attn_metric(layer: int, module: torch.nn.Module) -> None:
            attn[layer] = channel_metric(config.metric, stats[layer, "attn"], module.self_attn.o_proj.weight)

        def mlp_metric(layer: int, module: torch.nn.Module) -> None:
            mlp[layer] = channel_metric(config.metric, stats[layer, "mlp"], module.mlp.down_proj.weight)

        probe = LayerProbe(attach=hooks, finish_attention=attn_metric, finish=mlp_metric)
        runner.run(calibration, config.batch_size, probe, "flap calibration")
        tensors = {
            "attn_score": torch.stack(attn).pow(2),
            "mlp_score": torch.stack(mlp),
            "attn_mean": torch.stack([stats[i, "attn"].mean() for i in range(adapter.num_layers)]),
            "mlp_mean": torch.stack([stats[i, "mlp"].mean() for i in range(adapter.num_layers)]),
        }
        meta = {
            "method": "flap",
            "metric": config.metric,
            "nsamples": int(calibration.shape[0]),
            "seqlen": int(calibration.shape[1]),
            **adapter.shape_meta(),
        }
        return Scores(tensors=tensors, meta=meta)

    def check_ratio(self, model: torch.nn.Module, target_ratio: float, config: FlapConfig) -> None:
        """A ratio must lie in [0, 1); UL-UM must realise it within 0.02 with the official uniform counts."""
        super().check_ratio(model, target_ratio, config)
        if config.structure == "UL-UM":
            uniform_counts(get_adapter(model), target_ratio, config.budget, "flap", config.round_to)

    def select(
        self, scores: Scores, model: torch.nn.Module, target_ratio: float, config: FlapConfig
    ) -> PruningPlan:
        """Masks from the saved scores, the compensation biases, and the plan (cheap)."""
        self.check_ratio(model, target_ratio, config)
        adapter = get_adapter(model)
        _check_scores(scores, adapter, config)
        notes: dict = {
            "extensions": list(EXTENSIONS),
            "structure": config.structure,
            "metric": config.metric,
            "budget": config.budget,
        }
        if config.round_to > 1:
            notes["deviations"] = [round_to_deviation(config.round_to)]
        if config.structure == "AL-AM":
            attn_keep, mlp_keep = self._adaptive(scores, adapter, target_ratio, config, notes)
        else:
            attn_keep, mlp_keep = self._uniform(scores, adapter, target_ratio, config, notes)
        plan = _plan(adapter, attn_keep, mlp_keep, scores, target_ratio, config, notes)
        notes.setdefault("native_pruning_ratio", target_ratio if config.budget == "native" else None)
        notes.update(target_ratio=target_ratio, achieved_decoder_ratio=plan_decoder_ratio(adapter, plan))
        return plan

    def _adaptive(
        self, scores: Scores, adapter: ModelAdapter, target_ratio: float, config: FlapConfig, notes: dict
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """AL-AM: one global threshold over standardised group and channel scores."""
        width = adapter.group_size * adapter.head_dim
        attn = group_channels(standardize(scores.tensors["attn_score"]), width).mean(dim=-1)
        mlp = standardize(scores.tensors["mlp_score"])
        sorted_scores, order = rank(attn, mlp)
        weight = head_weight(adapter.group_size, adapter.head_dim)
        if config.budget == "native":
            k = native_cut(order, attn.numel(), weight, target_ratio)
        else:
            k = _decoder_cut(adapter, attn, mlp, sorted_scores, order, scores, target_ratio, config)
        attn_keep, mlp_keep = _keep(adapter, attn, mlp, sorted_scores, k, config.round_to)
        kept_weight = int(attn_keep.sum()) * weight + int(mlp_keep.sum())
        notes.update(
            head_weight=weight,
            threshold=None if k >= order.numel() else float(sorted_scores[k]),
            native_weight_removed=1 - kept_weight / (attn.numel() * weight + mlp.numel()),
        )
        return attn_keep, mlp_keep

    def _uniform(
        self, scores: Scores, adapter: ModelAdapter, target_ratio: float, config: FlapConfig, notes: dict
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """UL-UM: the same count of groups and channels removed in every layer."""
        width = adapter.group_size * adapter.head_dim
        attn = group_channels(scores.tensors["attn_score"], width).sum(dim=-1)
        mlp = scores.tensors["mlp_score"]
        counts = uniform_counts(adapter, target_ratio, config.budget, "flap", config.round_to)
        notes.update(counts.notes())
        return keep_uniform(attn, counts.kv_groups_removed), keep_uniform(mlp, counts.channels_removed)


def _keep(
    adapter: ModelAdapter,
    attn: torch.Tensor,
    mlp: torch.Tensor,
    sorted_scores: torch.Tensor,
    k: int,
    round_to: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """AL-AM masks at cut ``k``, aligned per layer when ``round_to`` > 1."""
    attn_keep, mlp_keep = keep_above(attn, mlp, sorted_scores, k)
    if round_to == 1:
        return attn_keep, mlp_keep
    return align_masks(attn, mlp, attn_keep, mlp_keep, (kv_unit(adapter, round_to), round_to))


def _decoder_cut(
    adapter: ModelAdapter,
    attn: torch.Tensor,
    mlp: torch.Tensor,
    sorted_scores: torch.Tensor,
    order: torch.Tensor,
    scores: Scores,
    target_ratio: float,
    config: FlapConfig,
) -> int:
    """The cut whose plan has the decoder ratio closest to the target.

    A first cut counts the real parameters of each KV group and channel; a second, with the target
    shifted by the first cut's error, corrects for removed norms and added compensation biases.
    """
    layers = adapter.num_layers
    head_cost = torch.tensor([kv_group_params(adapter, i) for i in range(layers)], dtype=torch.float64)
    chan_cost = torch.tensor([mlp_channel_params(adapter, i) for i in range(layers)], dtype=torch.float64)
    costs = torch.cat([head_cost.repeat_interleave(attn.shape[1]), chan_cost.repeat_interleave(mlp.shape[1])])
    total = decoder_params(adapter.model)

    def error(k: int) -> float:
        attn_keep, mlp_keep = _keep(adapter, attn, mlp, sorted_scores, k, config.round_to)
        plan = _plan(adapter, attn_keep, mlp_keep, scores, target_ratio, config, {})
        return plan_decoder_ratio(adapter, plan) - target_ratio

    first = budget_cut(costs[order], target_ratio * total)
    first_error = error(first)
    second = budget_cut(costs[order], (target_ratio - first_error) * total)
    if second != first and abs(error(second)) < abs(first_error):
        return second
    return first


def _plan(
    adapter: ModelAdapter,
    attn_keep: torch.Tensor,
    mlp_keep: torch.Tensor,
    scores: Scores,
    target_ratio: float,
    config: FlapConfig,
    notes: dict,
) -> PruningPlan:
    return PruningPlan(
        base_model=adapter.name,
        method="flap",
        params=config.to_dict(),
        target_ratio=target_ratio,
        layers=layer_plans(attn_keep, mlp_keep),
        compensation=(compensation(adapter, attn_keep, mlp_keep, scores) or None)
        if config.bias_compensation
        else None,
        notes=notes,
    )


def _check_inputs(adapter: ModelAdapter, calibration: torch.Tensor) -> None:
    if not adapter.is_dense():
        raise PrunebenchError("flap scores a dense model, but this model is already pruned")
    if calibration.dim() != 2 or calibration.dtype != torch.long:
        raise PrunebenchError(
            f"flap: calibration must be a [nsamples, seqlen] LongTensor, got {tuple(calibration.shape)}"
        )
    if calibration.shape[0] < 2:
        raise PrunebenchError(
            f"flap needs at least 2 calibration samples (its fluctuation ignores the first), got {calibration.shape[0]}"
        )


def _check_scores(scores: Scores, adapter: ModelAdapter, config: FlapConfig) -> None:
    meta = scores.meta
    if meta.get("method") != "flap":
        raise PrunebenchError(f"these scores were made by {meta.get('method')!r}, not by flap")
    if meta.get("metric") != config.metric:
        raise PrunebenchError(
            f"scores use metric {meta.get('metric')!r} but the config asks for {config.metric!r}"
        )
    expected = (
        adapter.num_layers,
        adapter.num_kv_heads,
        adapter.group_size,
        adapter.head_dim,
        adapter.intermediate_size,
    )
    found = tuple(
        meta.get(k) for k in ("num_layers", "num_kv_heads", "group_size", "head_dim", "intermediate_size")
    )
    if found != expected or not adapter.is_dense():
        raise PrunebenchError(f"flap scores are for shapes {found}, but the model has {expected}")
