"""CFSP: coarse-to-fine structured pruning of FFN channels by activation angles and norms.

Wang et al., "CFSP: An Efficient Structured Pruning Framework for LLMs with Coarse-to-Fine
Activation Information" (arXiv 2409.13199); official code ``wyxscir/CFSP`` (``lib/prune.py``,
``prune_cfsp``; ``lib/block_metrics.py``; ``lib/layerwrapper.py``). Only the FFN intermediate
channels are pruned (row ``j`` of ``gate_proj``/``up_proj`` and column ``j`` of ``down_proj``);
attention, embeddings and norms are untouched. Steps, as in the official code:

1. Calibration forward (``score``): every decoder layer sees the activations of the **dense**
   model (the official code scores all layers before pruning any). For each layer we record

   * the coarse score ``I_l = sum over samples and tokens of arccos(cos(h_in, h_out)) / pi``,
     the angular distance between the block's input and output hidden states
     (``block_influence(..., 'angular')``). Fix: the cosine is clamped to ``[-1, 1]`` before
     ``arccos`` (the official code can produce NaN when rounding pushes it past 1); a zero-norm
     token keeps the official ``NaN -> 0.5`` replacement;
   * the mean over samples of the per-sample sum of squares of the ``down_proj`` input
     (Wanda's ``scaler_row``), ``rho_j``, and ``A_j = sqrt(rho_j)``.

2. Coarse importance (ratio-independent, saved as ``coarse_importance``):
   ``s_l = sigmoid(a * (I_l - mean(I)) / 1e4)``. The absolute constant ``1e4`` is the official
   one, so the allocation depends on the number of calibration tokens.

3. Fine score (``three_w_one_wa``, saved as ``fine_score``): ``S_j = mean_i[(T1 + T2 + T3)_ij] *
   A_j**c`` with ``T1`` the column-normalised ``|W_down| * A**b`` and ``T2``/``T3`` the
   column-normalised ``|W_up^T|``/``|W_gate^T|``. Each ``T`` column sums to one over ``i``, so
   ``S_j = 3/d * A_j**c`` (up to rounding): the score is the activation norm. We compute the
   formula as coded; a test checks the identity. Extension: a column whose sum is zero (a channel
   that is never active) gets ``T = 0`` instead of the official ``0/0 = NaN``.

4. Allocation (``select``, exact arithmetic of the official code, Python floats): ``s̄ = mean(s)``;
   if ``max(s)/s̄ * (1-r) >= 1`` the deviations are shrunk by
   ``k = s̄ (1/(1-r) - 1) / (max(s) - s̄) / 1.05``; keep ratio ``k_l = s_l / s̄ * (1 - r)``
   (the official list ``every_pruning_ratios`` holds fractions *kept*).

5. Channel selection: with ``cuda_friendly`` (the default of the official ``start.sh``) layer ``l``
   keeps ``int((m*k_l + 64)/128)*128`` channels, i.e. ``m*k_l`` rounded to the **nearest** multiple of
   128, the same float operations as the official threshold index ``int((m*k_l + 64)/128)*128 - 1``
   (the multiple is the ``round_to`` option, default 128; the half-step is ``round_to/2``).
   Fix: when that count is 0 the official index ``-1`` picks the smallest score and keeps **every**
   channel; we keep ``round_to`` channels instead (and never more than ``m``). Without
   ``cuda_friendly`` a layer keeps ``int(m*k_l) + 1`` channels (the official off-by-one).
   Deviation: the official code keeps every channel whose score ties the threshold; we keep exactly
   the counted number, ties broken towards the lower channel index.

Study ratio (prunebench decision 3): the target is a fraction of decoder-layer parameters. ``select``
searches CFSP's native FFN ratio ``r`` on a grid (plus the nominal ``target * decoder / ffn``) for
the achieved decoder ratio (after rounding) closest to the target, and raises if it misses by more
than ``tolerance``. The native ratio can be given directly as ``ffn_ratio``; target, native and
achieved ratios are recorded in ``plan.notes``.

Not implemented (options of the official code outside its default recipe): the ``cosine``/``mse``/
``mae`` coarse metrics and the other fine metrics (``one_wa``, ``one_a``, ``three_w_one_a``,
``wanda_base``, ``mag_base``). The official recovery (IG-LoRA) is not public; see ``cfsp_lora``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from prunebench.errors import PrunebenchError
from prunebench.methods import Method, MethodConfig, Scores, register
from prunebench.models import get_adapter
from prunebench.models.counting import decoder_params, mlp_channel_params, plan_decoder_ratio
from prunebench.models.streaming import LayerProbe, ResidentRunner, Runner
from prunebench.plan import LayerPlan, PruningPlan

# The official allocation divides the centred angular scores by this absolute constant.
SCALE = 1e4
# The official shrink step leaves 5 % headroom below a keep ratio of 1.
SHRINK_MARGIN = 1.05
# Points of the grid over the native FFN ratio searched by ``select``.
GRID_POINTS = 2000
# Points between two grid points that straddle the target.
REFINE_POINTS = 50
# Meta keys that must agree between scoring and selection.
SCORING_KEYS = ("a", "b", "c")


@dataclass(frozen=True)
class CfspConfig(MethodConfig):
    """Official defaults (``main.py`` argparse, ``get_llm`` and ``start.sh``): WikiText-2 train, 128 x 1024, seed 0."""

    seqlen: int = 1024
    a: float = 1.0  # temperature of the coarse sigmoid (--a)
    b: float = 1.0  # exponent of the activation inside T1 (--b)
    c: float = 1.0  # exponent of the activation multiplying the sum (--c)
    cuda_friendly: bool = True  # round kept widths to multiples of round_to (start.sh)
    round_to: int = 128  # the official multiple; tiny test models use smaller ones
    ffn_ratio: float | None = None  # native knob: fraction of FFN channels removed (overrides the mapping)
    tolerance: float = 0.02  # largest accepted |achieved - target| decoder ratio

    def __post_init__(self) -> None:
        # MethodConfig.from_params coerces plain scalar types only; a command-line "0.3" arrives as text.
        if isinstance(self.ffn_ratio, str):
            try:
                object.__setattr__(self, "ffn_ratio", float(self.ffn_ratio))
            except ValueError:
                raise PrunebenchError(f"cfsp: ffn_ratio={self.ffn_ratio!r} is not a number") from None

    def check(self) -> None:
        super().check()
        if self.ffn_ratio is not None and not 0 <= self.ffn_ratio < 1:
            raise PrunebenchError(f"cfsp: ffn_ratio must be in [0, 1), got {self.ffn_ratio}")
        if self.round_to < 1:
            raise PrunebenchError(f"cfsp: round_to must be a positive integer, got {self.round_to}")
        if self.tolerance < 0:
            raise PrunebenchError(f"cfsp: tolerance must be >= 0, got {self.tolerance}")


def angular_distance(h_in: torch.Tensor, h_out: torch.Tensor) -> torch.Tensor:
    """Per-token ``arccos(cos(h_in, h_out)) / pi`` in fp32 (official ``block_influence``, angular).

    Row-wise dot products instead of the official full Gram matrix (same values). A zero-norm token
    gives ``NaN`` which becomes 0.5 as in the official code; the cosine is clamped to [-1, 1] (fix).
    """
    x = h_in.reshape(-1, h_in.shape[-1]).float()
    y = h_out.reshape(-1, h_out.shape[-1]).float()
    cos = (x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1))
    cos = cos.nan_to_num(nan=0.5).clamp(-1.0, 1.0)
    return torch.arccos(cos) / math.pi


def coarse_importance(angular: list[float], a: float) -> list[float]:
    """``s_l = sigmoid(a * (I_l - mean(I)) / 1e4)``, in the official order of operations."""
    mid = sum(angular) / len(angular)
    return [1 / (1 + math.exp(-((i - mid) / SCALE) * a)) for i in angular]


def keep_ratios(importance: list[float], ffn_ratio: float) -> list[float]:
    """Per-layer keep ratios from the coarse importances ``s_l`` (official allocation, exact).

    Shrinks the deviations from the mean when the most important layer would keep everything, then
    ``k_l = s_l / mean(s) * (1 - r)``.
    """
    s = list(importance)
    avg = sum(s) / len(s)
    top = max(s)
    if top / avg * (1 - ffn_ratio) >= 1:
        factor = (avg * (1 / (1 - ffn_ratio) - 1)) / (top - avg) / SHRINK_MARGIN
        s = [avg + (v - avg) * factor if v > avg else avg - (avg - v) * factor for v in s]
        avg = sum(s) / len(s)
    return [v / avg * (1 - ffn_ratio) for v in s]


def kept_count(width: int, keep_ratio: float, round_to: int, cuda_friendly: bool) -> int:
    """Channels a layer of ``width`` keeps (official threshold index + 1, with the low-end fix).

    ``cuda_friendly``: the official index ``int((m*k + 64)/128)*128 - 1`` keeps ``index + 1``
    channels. When that is 0 the official index is -1 and every channel survives (bug); we keep
    ``round_to`` channels. Capped at ``width`` (the official code raises ``IndexError`` there).
    Otherwise the official index ``int(m*k)`` keeps ``int(m*k) + 1`` channels.
    """
    if cuda_friendly:
        count = int(((width * keep_ratio) + round_to / 2) / round_to) * round_to
        count = max(count, round_to)
    else:
        count = int(width * keep_ratio) + 1
    return min(count, width)


def fine_score(
    w_down: torch.Tensor, w_up: torch.Tensor, w_gate: torch.Tensor, act_norm: torch.Tensor, b: float, c: float
) -> torch.Tensor:
    """``three_w_one_wa`` channel scores of one FFN (fp32), as coded.

    ``w_down`` is ``[d, m]``, ``w_up``/``w_gate`` are ``[m, d]``, ``act_norm`` is ``A = sqrt(rho)``
    of shape ``[m]``. Each term is ``|W|`` normalised by its column sum over the ``d`` rows; the sum
    of the three is multiplied by ``A**c`` and averaged over the rows.
    """
    act = act_norm.float()

    def normalised(w: torch.Tensor) -> torch.Tensor:
        w = w.abs()
        return (w / w.sum(dim=0, keepdim=True)).nan_to_num(nan=0.0)

    under = w_down.float().abs() * act.pow(b).unsqueeze(0)
    total = normalised(under) + normalised(w_up.float().t()) + normalised(w_gate.float().t())
    return (total * act.pow(c).unsqueeze(0)).mean(dim=0)


def top_indices(scores: torch.Tensor, count: int) -> list[int]:
    """Indices of the ``count`` highest scores, ties to the lower index, returned in ascending order."""
    order = torch.sort(scores, descending=True, stable=True).indices[:count]
    return sorted(order.tolist())


class _Budget:
    """Decoder-ratio arithmetic for FFN-channel plans on one dense model (no surgery)."""

    def __init__(self, adapter, config: CfspConfig):
        self.widths = [adapter.mlp_channels(i) for i in range(adapter.num_layers)]
        self.channel_params = [mlp_channel_params(adapter, i) for i in range(adapter.num_layers)]
        self.decoder = decoder_params(adapter.model)
        self.config = config

    def counts(self, importance: list[float], ffn_ratio: float) -> list[int]:
        ratios = keep_ratios(importance, ffn_ratio)
        cfg = self.config
        return [
            kept_count(m, k, cfg.round_to, cfg.cuda_friendly)
            for m, k in zip(self.widths, ratios, strict=True)
        ]

    def decoder_ratio(self, counts: list[int]) -> float:
        removed = sum((m - n) * p for m, n, p in zip(self.widths, counts, self.channel_params, strict=True))
        return removed / self.decoder

    def ffn_share(self) -> float:
        return sum(m * p for m, p in zip(self.widths, self.channel_params, strict=True)) / self.decoder

    def max_ratio(self) -> float:
        """Largest decoder ratio any allocation can reach (every layer at its minimum width)."""
        floor = self.config.round_to if self.config.cuda_friendly else 1
        return self.decoder_ratio([min(floor, m) for m in self.widths])

    def native_ratio(self, importance: list[float], target: float) -> float:
        """The native FFN ratio whose rounded plan comes closest to ``target`` (ties: nearest nominal).

        A grid over ``[0, 1)`` plus the nominal ``target / ffn_share``, refined between neighbouring
        grid points whose achieved ratios straddle the target (where layers cross a rounding step).
        """

        def miss(r: float) -> float:
            return self.decoder_ratio(self.counts(importance, r)) - target

        nominal = min(target / self.ffn_share(), 1 - 1 / GRID_POINTS)
        grid = [i / GRID_POINTS for i in range(GRID_POINTS)]
        misses = [miss(r) for r in grid]
        candidates = [*grid, nominal]
        for i in range(GRID_POINTS - 1):
            if misses[i] * misses[i + 1] < 0:
                step = (grid[i + 1] - grid[i]) / REFINE_POINTS
                candidates += [grid[i] + j * step for j in range(1, REFINE_POINTS)]
        return min(candidates, key=lambda r: (abs(miss(r)), abs(r - nominal)))


def _dense_adapter(model):
    adapter = get_adapter(model)
    if not adapter.is_dense():
        raise PrunebenchError("cfsp scores and selects on a dense model; this one is already pruned")
    return adapter


@register("cfsp")
class Cfsp(Method):
    """CFSP (Wang et al. 2024): FFN channels by block angular distance (allocation) and activation norm."""

    Config = CfspConfig
    families = ("llama", "mistral", "qwen2")

    def check_ratio(self, model, target_ratio: float, config: CfspConfig) -> None:
        """Reject ratios CFSP cannot realise, before any scoring."""
        super().check_ratio(model, target_ratio, config)
        adapter = _dense_adapter(model)
        if config.cuda_friendly and adapter.intermediate_size < config.round_to:
            raise PrunebenchError(
                f"cfsp: intermediate size {adapter.intermediate_size} is smaller than round_to={config.round_to}"
            )
        reachable = _Budget(adapter, config).max_ratio()
        if config.ffn_ratio is None and target_ratio > reachable + config.tolerance:
            raise PrunebenchError(
                f"cfsp prunes FFN channels only: at most {reachable:.3f} of the decoder parameters can be "
                f"removed from this model (round_to={config.round_to}), target {target_ratio} is out of reach "
                f"(a smaller round_to or cuda_friendly=false widens the range)"
            )

    no_streaming = None

    def score(self, model, calibration: torch.Tensor, config: CfspConfig) -> Scores:
        """One dense forward per calibration sample; ratio-independent coarse and fine scores."""
        return self.score_layers(ResidentRunner(model), calibration, config)

    def score_layers(self, runner: Runner, calibration: torch.Tensor, config: CfspConfig) -> Scores:
        """:meth:`score` with the model resident or streamed layer by layer (same scores)."""
        adapter = _dense_adapter(runner.model)
        if calibration.dim() != 2 or calibration.shape[0] < 1 or calibration.shape[1] < 1:
            raise PrunebenchError(
                f"cfsp: calibration must be a [nsamples, seqlen] tensor with at least one token, "
                f"got shape {tuple(calibration.shape)}"
            )
        fine = torch.empty(adapter.num_layers, adapter.intermediate_size)

        def fine_scores(i: int, layer: torch.nn.Module, act_norm: torch.Tensor) -> None:
            mlp = layer.mlp
            fine[i] = by_channels(
                lambda rows: fine_score(
                    mlp.down_proj.weight.detach()[:, rows],
                    mlp.up_proj.weight.detach()[rows],
                    mlp.gate_proj.weight.detach()[rows],
                    act_norm[i, rows].to(mlp.down_proj.weight.device),
                    config.b,
                    config.c,
                ).cpu(),
                adapter.intermediate_size,
            )

        angular, act_norm = _collect(runner, calibration, fine_scores)
        importance = coarse_importance(angular, config.a)
        tensors = {
            "angular_distance": torch.tensor(angular, dtype=torch.float64),
            "coarse_importance": torch.tensor(importance, dtype=torch.float64),
            "act_norm": act_norm,
            "fine_score": fine,
        }
        meta = {
            "method": "cfsp",
            "a": config.a,
            "b": config.b,
            "c": config.c,
            "nsamples": int(calibration.shape[0]),
            "seqlen": int(calibration.shape[1]),
            "num_layers": adapter.num_layers,
            "intermediate_size": adapter.intermediate_size,
            "keys": {
                "angular_distance": "I_l: summed per-token angular distance between block input and output",
                "coarse_importance": "s_l = sigmoid(a (I_l - mean I) / 1e4), before the ratio-dependent shrink",
                "act_norm": "A_j = sqrt(mean over samples of the per-sample sum of squares of down_proj input)",
                "fine_score": "three_w_one_wa channel score S_j",
            },
        }
        return Scores(tensors=tensors, meta=meta)

    def select(self, scores: Scores, model, target_ratio: float, config: CfspConfig) -> PruningPlan:
        """Map the study ratio to CFSP's FFN ratio, allocate per layer, keep the top channels."""
        self.check_ratio(model, target_ratio, config)
        adapter = _dense_adapter(model)
        meta = scores.meta
        mismatched = [k for k in SCORING_KEYS if meta.get(k) != getattr(config, k)]
        if mismatched:
            raise PrunebenchError(
                f"cfsp: scores were computed with {', '.join(f'{k}={meta.get(k)}' for k in mismatched)}, "
                f"which differs from the requested parameters; rescore"
            )
        fine = scores.tensors["fine_score"]
        if tuple(fine.shape) != (adapter.num_layers, adapter.intermediate_size):
            raise PrunebenchError(
                f"cfsp: scores cover {tuple(fine.shape)} layers x channels, the model has "
                f"{(adapter.num_layers, adapter.intermediate_size)}"
            )
        importance = scores.tensors["coarse_importance"].tolist()
        budget = _Budget(adapter, config)
        native = (
            config.ffn_ratio
            if config.ffn_ratio is not None
            else budget.native_ratio(importance, target_ratio)
        )
        counts = budget.counts(importance, native)
        layers = {
            i: LayerPlan(mlp_channels=None if n == m else top_indices(fine[i], n))
            for i, (m, n) in enumerate(zip(budget.widths, counts, strict=True))
        }
        params = config.to_dict()
        plan = PruningPlan(
            base_model=getattr(model.config, "_name_or_path", "") or "",
            method="cfsp",
            params=params,
            target_ratio=target_ratio,
            layers=layers,
        )
        achieved = plan_decoder_ratio(adapter, plan)
        if config.ffn_ratio is None and abs(achieved - target_ratio) > config.tolerance:
            raise PrunebenchError(
                f"cfsp: with widths rounded to multiples of {config.round_to} the closest decoder ratio to "
                f"{target_ratio} is {achieved:.4f} (tolerance {config.tolerance}); use a smaller round_to, "
                f"cuda_friendly=false, or give ffn_ratio"
            )
        plan.notes = {
            "target_ratio": target_ratio,
            "native_ffn_ratio": native,
            "native_given": config.ffn_ratio is not None,
            "achieved_decoder_ratio": achieved,
            "achieved_ffn_channel_ratio": 1 - sum(counts) / sum(budget.widths),
            "keep_ratios": keep_ratios(importance, native),
            "kept_channels": counts,
            "fixes": [
                "cosine clamped to [-1, 1] before arccos",
                "a layer whose rounded width is 0 keeps round_to channels (official: keeps all)",
                "width capped at the layer width (official: IndexError)",
            ],
            "deviations": [
                "exactly the counted channels are kept; ties at the threshold go to the lower index"
            ],
        }
        return plan


#: FFN channels per block in :func:`by_channels` (a power of two; a fp32 block of 4096 x 256 is 4 MiB,
#: and fine_score makes about ten such temporaries).
CHANNEL_BLOCK = 256


def by_channels(fn: Callable[[slice], torch.Tensor], width: int, block: int = CHANNEL_BLOCK) -> torch.Tensor:
    """``fn(rows)`` over blocks of ``block`` FFN channels, concatenated (``[width]``).

    Every term of :func:`fine_score` is normalised and averaged per channel, so a block of channels
    gives the same values as the whole layer (a test checks it bit for bit) without fp32 copies of the
    three full matrices.
    """
    return torch.cat([fn(slice(start, min(start + block, width))) for start in range(0, width, block)])


def _collect(
    runner: Runner, calibration: torch.Tensor, finish: Callable[[int, torch.nn.Module, torch.Tensor], None]
) -> tuple[list[float], torch.Tensor]:
    """Dense forward of each sample alone; returns ``I_l`` and ``A = sqrt(rho)`` of the ``down_proj``
    inputs (``[layers, intermediate]``), and calls ``finish(l, layer, A)`` once layer ``l`` has seen
    every sample (its weights still resident)."""
    adapter = get_adapter(runner.model)
    num_layers, width = adapter.num_layers, adapter.intermediate_size
    angular = [0.0] * num_layers
    sq_sum = torch.zeros(num_layers, width, dtype=torch.float64)

    def on_output(i: int, h_in: torch.Tensor, h_out: torch.Tensor) -> None:
        angular[i] += angular_distance(h_in, h_out).sum().item()

    def hooks(i: int, layer: torch.nn.Module) -> list:
        def hook(module, args):
            sq_sum[i] += args[0].float().pow(2).sum(dim=tuple(range(args[0].dim() - 1))).double().cpu()

        return [layer.mlp.down_proj.register_forward_pre_hook(hook)]

    act_norm = torch.empty(num_layers, width)

    def done(i: int, layer: torch.nn.Module) -> None:
        act_norm[i] = (sq_sum[i] / calibration.shape[0]).sqrt().float()
        finish(i, layer, act_norm)

    probe = LayerProbe(attach=hooks, on_output=on_output, finish=done)
    runner.run(calibration, 1, probe, "cfsp calibration")
    return angular, act_norm
