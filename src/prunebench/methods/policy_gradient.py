"""Policy-gradient structured pruning (Gao, Liu, Zhang, Du, Xia, "Bypass Back-propagation: Optimization-based
Structural Pruning for Large Language Models via Policy Gradient", arXiv 2406.10576, ACL 2025; official code
ethanygao/backprop-free_LLM_pruning @60f0d31, folder ``prune_channel/``): Bernoulli keep-probabilities per KV
group and per MLP channel, learned from forward passes only.

Each step names the official file and function it reproduces; extensions of ours are marked
**extension** and listed in ``plan.notes["extensions"]``.

1. Masks (``modelutils.py`` ``WrappedLlaMaLayer``; bundled ``models/modeling_llama.py``): a score
   ``s ∈ [0, 1]`` per KV group (``attn``, ``[L, H_kv]``) and per MLP channel (``mlp``, ``[L, m]``), float32.
   A mask ``M = [U < s]``, ``U ~ Uniform[0, 1)``, multiplies the attention output of the group's query
   heads ``j·g … j·g+g−1`` just before ``o_proj`` and ``act(gate)·up`` just before ``down_proj``, so a zero
   equals removal. Here forward pre-hooks on ``o_proj`` and ``down_proj`` do that (:class:`MaskHooks`),
   no modified model file. Draw order per forward: layer by layer, ``H_kv`` then ``m`` uniforms, from a
   CPU ``torch.Generator`` seeded with ``seed`` (official: ``torch.rand_like`` on the CUDA generator).
2. Initialisation (``init.py`` ``wanda_sp_init``, ``utils.py`` ``sigmap``), with keep ratio ``κ = 1 − r``
   (the official "prune rate" **is** the keep ratio): sequentially, layer by layer, the Wanda statistic
   ``ρ = (1/N) Σ_n Σ_t x²`` of the ``o_proj`` and ``down_proj`` inputs (the project's Wanda-sp code,
   :mod:`~prunebench.methods.channel_stats`); channel metric ``mean_i |W_ij|·sqrt(ρ_j)``; a head's metric is
   the sum over its ``head_dim`` channels (official: blocks of a hard-coded 128; here the model's
   ``head_dim``, **extension**), a KV group's the mean over its ``g`` heads; the init masks keep metric
   ``≥`` the sorted value at ``int((1−κ)·H_kv)`` (``int(m·(1−κ))`` for channels) and are applied before
   the layer is run again to give the next layer's inputs. Scores per layer and kind:
   ``z = (a − mean a)/(std a + 1e-8)`` (unbiased std), ``p = sigmoid(z)``, ``s = clip(p + κ − mean p, 0, 1)``.
   Because the init masks depend on ``κ``, so does every layer's statistic after the first: the
   initialisation is part of the per-ratio step (:func:`initial_scores`).
3. Per step (``pgpruning.py`` ``ChannelPGPruner.prune_pg``, ``inplace_update_scores_by_pg_grad``): one
   batch of ``batch_size`` rows of ``train_seqlen`` tokens; ``samples_per_step`` (``K``, 2) forwards of the
   same batch with fresh masks; loss ``L_k`` = the causal-LM loss (``labels = input_ids``); a NaN sample is
   skipped, a step with no valid sample is skipped whole. Baseline: an exponential moving average with
   ``λ = 1/baseline_window`` (window 5), set to the first step's mean loss and updated with the current
   mean loss before use. Gradient ``ĝ = Σ_k (L_k − b)·(M_k − s)/sqrt((s+1e-7)(1−s+1e-7)) / (K − 1)``
   (``estimator: official``); ``estimator: score_function`` divides by ``(s+1e-7)(1−s+1e-7)``, the exact
   Bernoulli score function (**extension**, labelled). Update ``s ← s − η_t·ĝ`` (plain SGD; the official
   Adam optimisers are never stepped), ``η_t`` from ``torch.optim.lr_scheduler.CosineAnnealingLR`` with
   ``T_max = steps`` (no warm-up), read before it steps; ``attn_lr`` and ``mlp_lr`` separately.
4. Projection (``solve_v_total``, ``constrainScoreByWhole``): separately for the pool of all KV-group scores
   and of all channel scores of all layers, ``s ← clip(s − v, 0, 1)`` with ``v ≥ 0`` found by the official
   bisection on ``[0, max s]`` (tolerance 1e-3 on ``Σ clip(s − v, 0, 1) − N·κ``, at most 21 evaluations;
   ``v = 0`` when the sum is already below the budget), float32. :func:`project`.
5. Final mask (``get_hard_prune_thresh``): global per pool, the ``N − int(N·(1−κ))`` highest scores are
   kept. The official rule keeps ``s ≥ τ`` with ties, which keeps every unit once more than
   ``int(N·(1−κ))`` scores are exactly 0 (0 is absorbing); here exactly that many are kept, equal scores
   dropping the lower index first (a fix). Widths are therefore heterogeneous across layers.
6. Empty sublayers: the official code has no per-layer floor (``structure_prune`` then divides by zero).
   ``empty_sublayer: remove`` (default) removes an attention or MLP sublayer that lost every unit, which
   is exactly the masked model the scores were trained on (a zero mask equals removal);
   ``keep_one`` keeps its highest-scoring unit instead (one unit per such layer over the budget).

Budget (``scripts/llama2_7b.sh``): 15,000 steps × batch 8 × 128 tokens, ``K = 2``, window 5, lr 2e-3 (6e-3
in ``llama3_8b.sh``); initialisation on 128 C4 rows of 1024 tokens. Data here: the calibration rows
(``calibration()`` draws enough 1024-token C4 windows for the training budget); the first ``nsamples``
rows feed the initialisation, and every row is cut into ``train_seqlen`` blocks for training. When there
are fewer blocks than ``steps × batch_size`` (shared calibration, reduced studies) they are reused in
fresh shuffled passes (**extension**; official: one pass over 120,000 distinct blocks, DataLoader
shuffle). Block order: ``torch.randperm`` on a CPU generator seeded with ``seed``.

Study ratio: the official keep ratio applies to the KV-group pool and to the channel pool separately, so
the decoder ratio removed is ``r`` up to rounding and the norms; a ratio whose counts miss it by more than
0.02 is refused. The method's expensive step depends on the ratio (``ratio_dependent = True``): ``score``
stores the rows (the only ratio-independent part, since step 2's statistics depend on ``κ``) and
``select`` runs steps 2-6 for each ratio. **Extensions** beyond Llama: every family the adapters support
(Mistral, Qwen2; the official code is Llama-only), any ``head_dim``. Not reproduced: the layer-granularity
variant the v1 abstract mentions (not in the official code), the penalty term (off in the scripts), the
other init types, the 128-token WikiText-2 perplexity protocol (the study's protocol applies).

Fidelity (docs/fidelity/policy-gradient.md): the official ``prune_channel/`` code was run on CPU with its
bundled transformers-4.37 model, on tiny random Llamas (MHA and GQA, ``head_dim`` 128), with the same
rows, batches and uniform draws. Initial probabilities agree to float32 rounding (≤ 3.6e-7; the shared
Wanda statistic accumulates in float64, the official one in float32), with identical init masks. Given
the same losses, every training step is bitwise identical; with each side's own forward (transformers
4.37 vs 5.x, losses within 1.4e-6) the probabilities stay within 5.4e-7 over 5 steps. The final masks
are identical in all 4 cases. The paper's body could not be read here, so whether its estimator has the
square root is unverified; the code's form is the default.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.methods import Method, MethodConfig, Scores, register
from prunebench.methods.base import calibration_rows_scores
from prunebench.methods.channel_stats import InputStats, attach
from prunebench.methods.flap import keep_uniform, width_plan
from prunebench.methods.wanda_sp import wanda_scores
from prunebench.methods.width_budget import TOLERANCE, Costs
from prunebench.models import get_adapter
from prunebench.models.adapter import ModelAdapter
from prunebench.models.streaming import capture_first_call
from prunebench.plan import PruningPlan

ESTIMATORS = ("official", "score_function")
EMPTY_SUBLAYER = ("remove", "keep_one")
#: Added inside the official square root (and in the exact form's divisor) to keep it finite at 0 and 1.
EPS = 1e-7
#: The official bisection: stop when |Σ clip(s − v) − k| < 1e-3 or after 21 evaluations.
BISECTION_TOL, BISECTION_EVALS = 1e-3, 21
EXTENSIONS = [
    "any family the adapters support (official: Llama only) and any head_dim (official init: 128)",
    "final mask keeps exactly N - int(N(1-keep)) units per pool (official: s >= tau, ties kept)",
    "masks by forward pre-hooks on o_proj / down_proj inputs (official: a modified modeling_llama.py)",
    "uniform draws from a seeded CPU generator (official: CUDA rand_like); blocks reused when fewer than steps x batch",
]


@dataclass(frozen=True)
class PolicyGradientConfig(MethodConfig):
    """The official script settings (``scripts/llama2_7b.sh``; ``main.py`` defaults where the script is silent)."""

    calib_dataset: str = "c4"  # --init-data-name / --train-data-name
    nsamples: int = 128  # --nsamples: rows for the Wanda-sp initialisation
    seqlen: int = 1024  # --init-seqlen
    seed: int = 42  # --seed
    train_seqlen: int = 128  # --max-seq-length: training block length
    steps: int = 15000  # total_iters = dataset_size 120000 // train batch 8
    batch_size: int = 8  # --train-batch-size
    samples_per_step: int = 2  # --K
    baseline_window: int = 5  # --ma-window-size
    attn_lr: float = 2e-3  # --attn-score-lr (Llama-2-7B; 6e-3 for Llama-3-8B)
    mlp_lr: float = 2e-3  # --mlp-score-lr
    estimator: str = "official"
    empty_sublayer: str = "remove"
    init_batch_size: int = 8  # rows per forward in the initialisation (official: 1; same statistics)

    def check(self) -> None:
        super().check()
        for name in ("steps", "batch_size", "baseline_window", "init_batch_size"):
            if getattr(self, name) < 1:
                raise PrunebenchError(
                    f"policy-gradient: {name} must be at least 1, got {getattr(self, name)}"
                )
        if self.samples_per_step < 2:
            raise PrunebenchError(
                f"policy-gradient: samples_per_step must be at least 2 (the estimator divides by K - 1), "
                f"got {self.samples_per_step}"
            )
        if self.train_seqlen < 2:
            raise PrunebenchError(
                f"policy-gradient: train_seqlen must be at least 2, got {self.train_seqlen}"
            )
        for name in ("attn_lr", "mlp_lr"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise PrunebenchError(f"policy-gradient: {name} must be a positive number, got {value}")
        for name, value, allowed in (
            ("estimator", self.estimator, ESTIMATORS),
            ("empty_sublayer", self.empty_sublayer, EMPTY_SUBLAYER),
        ):
            if value not in allowed:
                raise PrunebenchError(
                    f"policy-gradient: {name} must be one of {', '.join(allowed)}, got {value!r}"
                )

    def rows_needed(self) -> int:
        """Calibration rows of ``seqlen`` tokens that give ``steps × batch_size`` distinct training blocks."""
        per_row = max(self.seqlen // self.train_seqlen, 1)
        return max(self.nsamples, math.ceil(self.steps * self.batch_size / per_row))


# ---------------------------------------------------------------------------------------------- step 1


class MaskHooks:
    """Forward pre-hooks that multiply every layer's ``o_proj`` input by its expanded KV-group mask and its
    ``down_proj`` input by its channel mask; masks ``None`` (the default) leave the model unchanged.

    ``attn``: ``[L, H_kv]`` and ``mlp``: ``[L, m]``, any dtype (0/1 values); KV group ``j`` gates o_proj input
    channels ``j·g·hd … (j+1)·g·hd − 1`` (its query heads in Hugging Face GQA order). Use as a context manager.
    """

    def __init__(self, adapter: ModelAdapter) -> None:
        self.adapter = adapter
        self.attn: torch.Tensor | None = None
        self.mlp: torch.Tensor | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, layer: int, part: str):
        width = self.adapter.group_size * self.adapter.head_dim

        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
            masks = self.attn if part == "attn" else self.mlp
            if masks is None:
                return None
            mask = masks[layer].repeat_interleave(width) if part == "attn" else masks[layer]
            return (args[0] * mask.to(device=args[0].device, dtype=args[0].dtype),)

        return hook

    def __enter__(self) -> MaskHooks:
        for i in range(self.adapter.num_layers):
            self._handles.append(
                self.adapter.attention(i).o_proj.register_forward_pre_hook(self._hook(i, "attn"))
            )
            self._handles.append(
                self.adapter.mlp(i).down_proj.register_forward_pre_hook(self._hook(i, "mlp"))
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def sample_masks(
    attn: torch.Tensor, mlp: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[U < s]`` for every score, drawing per layer ``H_kv`` then ``m`` uniforms (the official order)."""
    attn_masks, mlp_masks = [], []
    for layer in range(attn.shape[0]):
        attn_masks.append(torch.rand(attn.shape[1], generator=generator) < attn[layer])
        mlp_masks.append(torch.rand(mlp.shape[1], generator=generator) < mlp[layer])
    return torch.stack(attn_masks), torch.stack(mlp_masks)


# ---------------------------------------------------------------------------------------------- step 2


def sigmap(metric: torch.Tensor, keep: float) -> torch.Tensor:
    """``clip(sigmoid(z) + keep − mean sigmoid(z), 0, 1)`` with ``z`` the z-score (unbiased std, +1e-8)."""
    z = (metric - metric.mean()) / (metric.std() + 1e-8)
    p = torch.sigmoid(z)
    return (p + (keep - p.mean())).clamp(0, 1)


def _run(layer: nn.Module, inputs: list[tuple[torch.Tensor, dict[str, Any]]]) -> list[torch.Tensor]:
    outputs = []
    with torch.no_grad():
        for hidden, kwargs in inputs:
            out = layer(hidden, **kwargs)
            outputs.append(out[0] if isinstance(out, tuple) else out)
    return outputs


def initial_scores(
    adapter: ModelAdapter, input_ids: torch.Tensor, keep: float, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """The Wanda-sp initialisation (step 2): ``(attn [L, H_kv], mlp [L, m])`` float32 scores and the
    metrics and init masks (``{"attn_metric", "mlp_metric", "attn_init", "mlp_init"}``)."""
    n_kv, g, hd = adapter.num_kv_heads, adapter.group_size, adapter.head_dim
    device = adapter.embed_tokens.weight.device
    inputs = [
        capture_first_call(adapter.model.model, adapter.layers[0], batch.to(device))
        for batch in input_ids.split(batch_size)
    ]
    attn_scores, mlp_scores = [], []
    extra: dict[str, list[torch.Tensor]] = {
        "attn_metric": [],
        "mlp_metric": [],
        "attn_init": [],
        "mlp_init": [],
    }
    hooks = MaskHooks(adapter)
    for i in range(adapter.num_layers):
        layer = adapter.layers[i]
        o_proj, down_proj = adapter.attention(i).o_proj, adapter.mlp(i).down_proj
        attn_stats, mlp_stats = InputStats(o_proj.in_features), InputStats(down_proj.in_features)
        handles = [attach(o_proj, attn_stats), attach(down_proj, mlp_stats)]
        try:
            _run(layer, inputs)
        finally:
            for handle in handles:
                handle.remove()
        heads = wanda_scores(attn_stats, o_proj.weight).view(n_kv * g, hd).sum(-1)
        attn_metric = heads.view(n_kv, g).mean(-1).float()
        mlp_metric = wanda_scores(mlp_stats, down_proj.weight).float()
        attn_init = keep_uniform(attn_metric[None], int((1 - keep) * n_kv))[0]
        mlp_init = keep_uniform(mlp_metric[None], int(mlp_metric.numel() * (1 - keep)))[0]
        attn_scores.append(sigmap(attn_metric, keep))
        mlp_scores.append(sigmap(mlp_metric, keep))
        for key, value in zip(extra, (attn_metric, mlp_metric, attn_init, mlp_init), strict=True):
            extra[key].append(value)
        masks_attn = torch.ones(adapter.num_layers, n_kv)
        masks_mlp = torch.ones(adapter.num_layers, adapter.intermediate_size)
        masks_attn[i], masks_mlp[i] = attn_init.float(), mlp_init.float()
        hooks.attn, hooks.mlp = masks_attn, masks_mlp
        with hooks:
            outputs = _run(layer, inputs)
        inputs = [(out, kwargs) for out, (_, kwargs) in zip(outputs, inputs, strict=True)]
    return torch.stack(attn_scores), torch.stack(mlp_scores), {k: torch.stack(v) for k, v in extra.items()}


# ---------------------------------------------------------------------------------------------- steps 3-4


def solve_shift(scores: torch.Tensor, budget: float) -> torch.Tensor | float:
    """The official bisection for ``v ≥ 0`` with ``Σ clip(s − v, 0, 1) ≈ budget`` (0 when already below)."""

    def excess(v: torch.Tensor | float) -> torch.Tensor:
        return (scores - v).clamp(0, 1).sum() - budget

    if excess(0) < 0:
        return 0
    lo, hi = 0, scores.max()
    for _ in range(BISECTION_EVALS):
        v = (lo + hi) / 2
        value = excess(v)
        if abs(value) < BISECTION_TOL:
            break
        if value < 0:
            hi = v
        else:
            lo = v
    return max(0, v)


def project(scores: torch.Tensor, keep: float) -> torch.Tensor:
    """``clip(s − v, 0, 1)`` over the whole pool ``scores`` (any shape) with ``v`` from :func:`solve_shift`."""
    flat = scores.flatten()
    return (scores - solve_shift(flat, flat.numel() * keep)).clamp(0, 1)


def pg_gradient(
    scores: torch.Tensor, masks: torch.Tensor, advantages: torch.Tensor, samples: int, estimator: str
) -> torch.Tensor:
    """``Σ_k A_k·(M_k − s)/d(s) / (K − 1)`` with ``d = sqrt((s+ε)(1−s+ε))`` (official) or its square.

    ``scores``: ``[...]``; ``masks``: ``[K', ...]`` of the valid samples; ``advantages``: ``[K']`` (loss minus
    baseline); ``samples``: the configured ``K``.
    """
    variance = (scores + EPS) * (1 - scores + EPS)
    divisor = torch.sqrt(variance) if estimator == "official" else variance
    direction = (masks.float() - scores) / divisor
    shaped = advantages.reshape(-1, *[1] * scores.dim())
    return torch.sum(shaped * direction, dim=0) / (samples - 1)


def learning_rates(lr: float, steps: int) -> list[float]:
    """``η_0 … η_{steps−1}`` of ``CosineAnnealingLR(T_max=steps)``, each read before the scheduler steps."""
    holder = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(holder, steps)
    out = []
    for _ in range(steps):
        out.append(schedule.get_last_lr()[0])
        holder.step()
        schedule.step()
    return out


def training_blocks(input_ids: torch.Tensor, train_seqlen: int) -> torch.Tensor:
    """Every row cut into non-overlapping ``train_seqlen`` blocks (remainders dropped), ``[B, train_seqlen]``."""
    per_row = input_ids.shape[1] // train_seqlen
    return input_ids[:, : per_row * train_seqlen].reshape(-1, train_seqlen)


def batches(blocks: torch.Tensor, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches of ``batch_size`` blocks, shuffled passes one after another (a pass may span two)."""
    order = torch.empty(0, dtype=torch.long)
    while True:
        while order.numel() < batch_size:
            order = torch.cat([order, torch.randperm(blocks.shape[0], generator=generator)])
        yield blocks[order[:batch_size]]
        order = order[batch_size:]


@dataclass
class TrainingLog:
    """What the training loop did: steps updated, skipped, and the mean loss of the first and last steps."""

    updated: int = 0
    skipped: int = 0
    first_loss: float = math.nan
    last_loss: float = math.nan


def train(
    adapter: ModelAdapter,
    attn: torch.Tensor,
    mlp: torch.Tensor,
    blocks: torch.Tensor,
    keep: float,
    config: PolicyGradientConfig,
) -> TrainingLog:
    """Steps 3-4 in place on ``attn`` ``[L, H_kv]`` and ``mlp`` ``[L, m]`` (float32 scores)."""
    model = adapter.model
    device = next(model.parameters()).device
    mask_gen = torch.Generator().manual_seed(config.seed)
    data = batches(blocks, config.batch_size, torch.Generator().manual_seed(config.seed))
    rates = {
        "attn": learning_rates(config.attn_lr, config.steps),
        "mlp": learning_rates(config.mlp_lr, config.steps),
    }
    lam = torch.tensor(1.0 / config.baseline_window)
    baseline = torch.tensor(0.0)
    log = TrainingLog()
    was_training = model.training
    model.eval()
    try:
        with MaskHooks(adapter) as hooks, torch.no_grad():
            for _ in range(config.steps):
                batch = next(data).to(device)
                losses, attn_masks, mlp_masks = [], [], []
                for _k in range(config.samples_per_step):
                    a, m = sample_masks(attn, mlp, mask_gen)
                    hooks.attn, hooks.mlp = a.to(device), m.to(device)
                    loss = model(input_ids=batch, labels=batch, use_cache=False).loss.float().cpu()
                    if not bool(torch.isnan(loss)):
                        losses.append(loss)
                        attn_masks.append(a)
                        mlp_masks.append(m)
                if not losses:
                    log.skipped += 1
                    continue
                mean = torch.mean(torch.stack(losses))
                if log.updated == 0:
                    baseline, log.first_loss = mean, float(mean)
                baseline = baseline * (1.0 - lam) + mean * lam
                advantages = torch.stack(losses) - baseline
                t = log.updated
                for scores, masks, kind in ((attn, attn_masks, "attn"), (mlp, mlp_masks, "mlp")):
                    grad = pg_gradient(
                        scores, torch.stack(masks), advantages, config.samples_per_step, config.estimator
                    )
                    scores.sub_(rates[kind][t] * grad)
                attn.copy_(project(attn, keep))
                mlp.copy_(project(mlp, keep))
                log.updated += 1
                log.last_loss = float(mean)
    finally:
        model.train(was_training)
    return log


# ---------------------------------------------------------------------------------------------- steps 5-6


def removed_count(units: int, keep: float) -> int:
    """Units of a pool the final mask removes: ``int(N·(1 − keep))`` (the official threshold index)."""
    return int(units * (1 - keep))


def final_keep(scores: torch.Tensor, keep: float) -> torch.Tensor:
    """Global top-k mask of the pool ``scores`` (any shape): the ``int(N(1−keep))`` lowest go (stable order)."""
    flat = scores.flatten()
    mask = torch.ones_like(flat, dtype=torch.bool)
    mask[torch.sort(flat, stable=True).indices[: removed_count(flat.numel(), keep)]] = False
    return mask.view_as(scores)


def floor_empty(keep_mask: torch.Tensor, scores: torch.Tensor, policy: str) -> list[int]:
    """Apply ``empty_sublayer``: with ``keep_one`` give every layer without a unit its best one (in place).
    Returns the layers that had none."""
    empty = [i for i in range(keep_mask.shape[0]) if not bool(keep_mask[i].any())]
    if policy == "keep_one":
        for i in empty:
            keep_mask[i, int(torch.argmax(scores[i]))] = True
    return empty


def expected_ratio(adapter: ModelAdapter, keep: float) -> float:
    """Decoder ratio removed by the final masks' counts (norms of emptied sublayers not included)."""
    groups = removed_count(adapter.num_layers * adapter.num_kv_heads, keep)
    channels = removed_count(adapter.num_layers * adapter.intermediate_size, keep)
    return Costs(adapter).ratio(groups / adapter.num_layers, channels / adapter.num_layers)


# ---------------------------------------------------------------------------------------------- method


@register("policy-gradient")
class PolicyGradient(Method):
    """Policy-gradient pruning (Gao et al.): Bernoulli KV-group/channel masks learned by forward passes, global.

    See the module docstring for the step-by-step mapping to the official code. The training runs per
    ratio (``ratio_dependent``).
    """

    Config = PolicyGradientConfig
    families = ("llama", "mistral", "qwen2")
    ratio_dependent = True
    no_streamed_selection = (
        "its per-ratio training runs thousands of full-model forward passes; a model read from CPU memory "
        "layer by layer would move every weight once per pass"
    )

    def ratio_step_tokens(self, config: MethodConfig) -> int:
        """Training forward passes: steps x batch x K sampled masks x block length (the initialisation's
        sequential Wanda-sp pass is small beside it)."""
        assert isinstance(config, PolicyGradientConfig)
        return config.steps * config.batch_size * config.samples_per_step * config.train_seqlen

    def calibration(
        self, tokenizer: Any, source: str, config: MethodConfig, encoding: str = "utf-8"
    ) -> torch.Tensor:
        """Random ``seqlen`` windows of ``source`` (the study's sampler), enough rows for the training budget."""
        from prunebench.data import calibration_samples, load_text

        assert isinstance(config, PolicyGradientConfig)
        text = load_text(source, "train", encoding)
        return calibration_samples(tokenizer, text, config.rows_needed(), config.seqlen, config.seed)

    def score(self, model: nn.Module, calibration: torch.Tensor, config: PolicyGradientConfig) -> Scores:
        """Check the rows and store them (the only ratio-independent part: step 2 depends on the ratio)."""
        scores = calibration_rows_scores("policy-gradient", model, calibration)
        if calibration.shape[1] < config.train_seqlen:
            raise PrunebenchError(
                f"policy-gradient: the calibration rows have {calibration.shape[1]} tokens, fewer than one "
                f"training block of train_seqlen={config.train_seqlen}"
            )
        scores.meta |= get_adapter(model).shape_meta()
        return scores

    def check_ratio(self, model: nn.Module, target_ratio: float, config: PolicyGradientConfig) -> None:
        """The ratio lies in [0, 1) and keeping ``1 − r`` of each pool removes ``r`` of the decoder within 0.02."""
        super().check_ratio(model, target_ratio, config)
        if target_ratio == 0:
            return
        adapter = get_adapter(model)
        reached = expected_ratio(adapter, 1 - target_ratio)
        if abs(reached - target_ratio) > TOLERANCE:
            raise PrunebenchError(
                f"policy-gradient: keeping {1 - target_ratio:g} of the {adapter.num_layers * adapter.num_kv_heads} "
                f"KV groups and of the {adapter.num_layers * adapter.intermediate_size} MLP channels removes "
                f"{reached:.3f} of the decoder parameters, not within {TOLERANCE} of ratio {target_ratio}"
            )

    def select(
        self, scores: Scores, model: nn.Module, target_ratio: float, config: PolicyGradientConfig
    ) -> PruningPlan:
        """Steps 2-6 for this ratio: initialise, train, project, keep the global top-k."""
        self.check_ratio(model, target_ratio, config)
        adapter = get_adapter(model)
        _check_scores(scores, adapter)
        keep = 1 - target_ratio
        rows = scores.tensors["input_ids"]
        blocks = training_blocks(rows, config.train_seqlen)
        if blocks.shape[0] == 0:
            raise PrunebenchError(
                f"policy-gradient: the rows have {rows.shape[1]} tokens, fewer than train_seqlen={config.train_seqlen}"
            )
        device = next(model.parameters()).device
        init_rows = rows[: config.nsamples].to(device)
        attn, mlp, _ = initial_scores(adapter, init_rows, keep, config.init_batch_size)
        log = train(adapter, attn, mlp, blocks, keep, config)
        attn_keep, mlp_keep = final_keep(attn, keep), final_keep(mlp, keep)
        empty_attn = floor_empty(attn_keep, attn, config.empty_sublayer)
        empty_mlp = floor_empty(mlp_keep, mlp, config.empty_sublayer)
        extensions = list(EXTENSIONS)
        if config.estimator == "score_function":
            extensions.insert(0, "estimator=score_function: divided by s(1-s), the exact score function")
        notes: dict[str, Any] = {
            "extensions": extensions,
            "target_ratio": target_ratio,
            "keep_ratio": keep,
            "ratio_dependent": "initialisation and training ran for this ratio",
            "official_budget": "15000 steps x batch 8 x 128 tokens, K=2, window 5, init 128 x 1024 tokens",
            "budget": {
                "steps": config.steps,
                "batch_size": config.batch_size,
                "train_seqlen": config.train_seqlen,
                "init_rows": int(init_rows.shape[0]),
                "init_seqlen": int(rows.shape[1]),
                "training_blocks": int(blocks.shape[0]),
                "passes_over_blocks": config.steps * config.batch_size / blocks.shape[0],
            },
            "steps_updated": log.updated,
            "steps_skipped_nan": log.skipped,
            "mean_loss_first_step": log.first_loss,
            "mean_loss_last_step": log.last_loss,
            "removed_kv_groups": int((~attn_keep).sum()),
            "removed_channels": int((~mlp_keep).sum()),
            "empty_sublayer": config.empty_sublayer,
            "layers_without_kv_group": empty_attn,
            "layers_without_channel": empty_mlp,
        }
        return width_plan(adapter, "policy-gradient", config, target_ratio, attn_keep, mlp_keep, notes)


def _check_scores(scores: Scores, adapter: ModelAdapter) -> None:
    meta = scores.meta
    if meta.get("method") != "policy-gradient" or "input_ids" not in scores.tensors:
        raise PrunebenchError(f"these scores were made by {meta.get('method')!r}, not by policy-gradient")
    keys = ("num_layers", "num_kv_heads", "group_size", "head_dim", "intermediate_size")
    expected, found = adapter.shape_meta(), {k: meta.get(k) for k in keys}
    if found != expected or not adapter.is_dense():
        raise PrunebenchError(f"policy-gradient scores are for shapes {found}, but the model has {expected}")
