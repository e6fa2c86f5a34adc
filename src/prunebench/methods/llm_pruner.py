"""LLM-Pruner (Ma, Fang, Wang; NeurIPS 2023; official code horseee/LLM-Pruner @128a07d): block-wise pruning of
attention heads and MLP channels, scored by first-order Taylor importance of their dependency groups.

Each step names the official file and function it reproduces (``hf_prune.py`` for MHA Llama / Llama-2,
``llama3.py`` for GQA Llama-3, both with ``--block_wise --pruner_type taylor``); extensions of ours are
marked **extension** and listed in ``plan.notes["extensions"]``.

1. Calibration (``LLMPruner/datasets/example_samples.py``, ``get_bookcorpus``): Python ``random`` seeded
   with 42; for each of 10 samples draw row ``i = randint(0, len − 1)`` of BookCorpus' train split,
   tokenize that row alone (the tokenizer's special tokens, so Llama's BOS), redraw while it has fewer
   than ``seqlen`` tokens or was drawn before, then take the window starting at ``randint(0, len −
   seqlen)``; ``seqlen`` is 64 (hard-coded at the scripts' call sites). :func:`example_windows`. A local
   text source gives its non-empty lines as rows. In the study's shared mode the shared samples are used.
2. Gradients (``hf_prune.py`` / ``llama3.py``, the backward before ``pruner.step()``): one forward and
   backward of the whole batch with ``labels = input_ids`` (mean next-token cross-entropy), so every
   weight gets ``G = ∂L/∂W``. ``param_second`` / ``param_mix`` first run each sample alone and
   accumulate ``F = (1/n) Σ_n g_n ⊙ g_n``. :func:`taylor_saliences`.
3. Element importance (``LLMPruner/pruner/hf_llama_pruner.py``, ``TaylorImportance.__call__``):
   ``S = W⊙G`` (``param_first``, the scripts' default and the paper's Element¹), ``W⊙F⊙W``
   (``param_second``), ``W⊙G − ½·W⊙F⊙W`` (``param_mix``, Element²), ``W⊙G`` reduced as a vector
   (``vectorize``, the paper's vector-wise importance). Each matrix gives one number per channel of the
   group: for output rows (q, k, v, gate, up) ``Σ_k |S_ik|`` (``vectorize``: ``|Σ_k S_ik|``), for input
   columns (o_proj, down_proj) the same over rows. Products are formed in float64 from gradients in the
   model's dtype (official: float32 on CPU in ``hf_prune.py``, float16 in ``llama3.py``).
4. Group aggregation (same function, then ``metapruner.py`` ``prune_local``): vectors longer than the
   shortest are folded onto it (``v.view(-1, n).sum(0)``), stacked and reduced with ``grouping_strategy``
   (``sum`` by default; ``mean``, ``max``, ``prod``, ``first``, ``second`` in the order the official
   dependency graph lists the group: MHA ``q, o, v, k`` with root ``q_proj``, GQA ``k, o, v, q`` with root
   ``k_proj``, MLP ``gate, up, down``); a head's score is then always the **sum** over its ``head_dim``
   channels. :func:`unit_scores`.
5. GQA (``llama3.py``): the unit is a KV group (a KV head and its ``g`` query heads, query heads
   ``j·g … j·g+g−1``, which is what the official dependency graph removes), counted on ``k_proj``. The
   official fold in step 4 credits KV channel ``c`` with query channels ``c + t·H_kv·hd``, i.e. KV group
   ``j`` is scored with query heads ``j, j+H_kv, j+2·H_kv, …`` although it removes heads ``j·g … j·g+g−1``
   (confirmed by running the official code: docs/fidelity/llm-pruner.md). ``gqa_alignment: official``
   (default) reproduces this, since the published Llama-3 numbers come from it; ``consecutive``
   (**extension**, a fix) scores each KV group with its own query heads. For MHA both are the same.
6. Counts (``metapruner.py`` ``prune_local``; local, one iterative step): in every layer of the range, with
   ``C`` channels on the root, ``n = C − int(C·(1 − r))`` channels are to go; KV groups removed
   ``n // head_dim`` (``C = H_kv·head_dim``), MLP channels removed ``n`` (``C = intermediate_size``); the
   lowest scores go (official: unstable ``argsort``; ours: stable, so ties drop the lower index).
   A count that would remove every unit of a layer is refused (the official ``check_pruning_group``
   then silently skips the layer). :func:`removed_counts`.
7. Layer range (README's command): layers 4 … L−3 are pruned, attention and MLP
   (``--block_{attention,mlp}_layer_start 4 --block_{attention,mlp}_layer_end 30`` for 32 layers); the
   first four and the last two stay whole. ``*_layer_end`` ≤ 0 counts from the end.

The Taylor scores are measured once on the dense model (``score``) and every ratio is a cheap selection
(``select``). Recovery is the study's ``lora`` variant (LLM-Pruner's LoRA recipe).

Extensions: **Decoder budget** (``budget=decoder``, default) -- the study ratio is a fraction of
decoder-layer parameters; ``r`` is the native ratio whose counts (only in the pruned range) give the
decoder ratio closest to it (as :func:`~prunebench.methods.width_budget.uniform_counts` does for
Wanda-sp; a miss above 0.02 is refused). ``budget=native`` passes the ratio as ``--pruning_ratio``.
**Batched gradients** -- ``batch_size`` rows at a time, each batch's loss weighted by its share of the
rows, which gives the official single-batch gradient. **Zero KV groups for small r** -- where
``0 < n < head_dim`` the official code fails on an empty ``torch.cat`` (seen at r = 0.1 in the
fidelity run); here no group is removed.
Not reproduced: ``--global_pruning``, ``--iterative_steps > 1``, ``--channel_wise``, ``--layer_wise`` and
the l1/l2/random pruners (no shipped command uses them for the paper's LLM-Pruner rows).

Fidelity (docs/fidelity/llm-pruner.md):
- Setup: the official ``llama3.py`` path was run outside the repository, on the trained demo model
  (GQA) and on a random MHA Llama, with the same calibration rows.
- Result: the windows drawn are identical; kept KV groups, query heads and MLP channels are identical
  in all 11 runs where the official code runs (``param_first``, ``vectorize``, ``param_mix``; ``sum``
  and ``max``; r from 0.25 to 0.6); group scores agree within 4e-6 relative.
- Condition: on today's transformers the official GQA run needs eager attention, since SDPA no longer
  calls ``repeat_kv``.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from prunebench.errors import PrunebenchError
from prunebench.methods import Method, MethodConfig, Scores, register
from prunebench.methods.flap import width_plan
from prunebench.methods.width_budget import Costs, UniformCounts, check_budget, closest, first_ratio
from prunebench.models import get_adapter
from prunebench.models.adapter import ModelAdapter
from prunebench.plan import PruningPlan

IMPORTANCES = ("param_first", "param_second", "param_mix", "vectorize")
GROUPINGS = ("sum", "mean", "max", "prod", "first", "second")
ALIGNMENTS = ("official", "consecutive")
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
#: Matrices whose *input* columns belong to the group (the rest contribute output rows).
INPUT_SIDE = ("o_proj", "down_proj")
EXTENSIONS = [
    "decoder budget: native r chosen so the floored counts in the pruned range come closest to the study ratio",
    "gradients accumulated over batches of batch_size rows (equal to the official single batch)",
    "stable ascending order: equal scores drop the lower index first (official: unstable argsort)",
    "no KV group removed where 0 < C - int(C(1-r)) < head_dim (the official code fails there)",
]
CONSECUTIVE = (
    "GQA: KV group j scored with its own query heads j*g..j*g+g-1 (gqa_alignment=consecutive, a fix)"
)


@dataclass(frozen=True)
class LLMPrunerConfig(MethodConfig):
    """LLM-Pruner's official settings (README command; ``hf_prune.py`` / ``llama3.py`` defaults)."""

    calib_dataset: str = "bookcorpus"
    nsamples: int = 10  # --num_examples
    seqlen: int = 64  # hard-coded at the get_examples call
    seed: int = 42  # --seed
    importance: str = "param_first"  # --taylor
    grouping_strategy: str = "sum"  # --grouping_strategy
    attn_layer_start: int = 4  # --block_attention_layer_start
    attn_layer_end: int = -2  # --block_attention_layer_end (30 of 32 layers); <= 0 counts from the end
    mlp_layer_start: int = 4  # --block_mlp_layer_start
    mlp_layer_end: int = -2  # --block_mlp_layer_end
    gqa_alignment: str = "official"
    budget: str = "decoder"
    batch_size: int = 10

    def check(self) -> None:
        super().check()
        for name, value, allowed in (
            ("importance", self.importance, IMPORTANCES),
            ("grouping_strategy", self.grouping_strategy, GROUPINGS),
            ("gqa_alignment", self.gqa_alignment, ALIGNMENTS),
        ):
            if value not in allowed:
                raise PrunebenchError(
                    f"llm-pruner: {name} must be one of {', '.join(allowed)}, got {value!r}"
                )
        check_budget("llm-pruner", self.budget)
        if self.batch_size < 1:
            raise PrunebenchError(f"llm-pruner: batch_size must be at least 1, got {self.batch_size}")
        for part in ("attn", "mlp"):
            if getattr(self, f"{part}_layer_start") < 0:
                raise PrunebenchError(
                    f"llm-pruner: {part}_layer_start must be >= 0, got {getattr(self, f'{part}_layer_start')}"
                )

    def layer_range(self, part: str, num_layers: int) -> range:
        """The layers whose ``part`` (``"attn"`` or ``"mlp"``) is pruned; an empty or out-of-model range raises."""
        start, end = getattr(self, f"{part}_layer_start"), getattr(self, f"{part}_layer_end")
        stop = end if end > 0 else num_layers + end
        if not 0 <= start < stop <= num_layers:
            raise PrunebenchError(
                f"llm-pruner: {part}_layer_start={start}, {part}_layer_end={end} give layers [{start}, {stop}), "
                f"not a non-empty range of this model's {num_layers} layers (an end <= 0 counts from the end)"
            )
        return range(start, stop)


# ---------------------------------------------------------------------------------------------- step 1


def example_windows(
    tokenizer: PreTrainedTokenizerBase, rows: Sequence[str], nsamples: int, seqlen: int, seed: int
) -> torch.Tensor:
    """The official ``get_bookcorpus`` draw: ``[nsamples, seqlen]`` windows of distinct rows of ``rows``.

    Python ``random.Random(seed)``; per sample, row indices are drawn with ``randint(0, len(rows) − 1)``
    until a row not drawn before has at least ``seqlen`` tokens (tokenized alone, special tokens
    included), then the window start is ``randint(0, tokens − seqlen)``.
    """
    rng = random.Random(seed)
    history: set[int] = set()
    tokens: dict[int, list[int]] = {}
    windows = []
    for _ in range(nsamples):
        while True:
            i = rng.randint(0, len(rows) - 1)
            if i not in tokens:
                tokens[i] = tokenizer(rows[i], verbose=False)["input_ids"]
            if len(tokens[i]) >= seqlen and i not in history:
                history.add(i)
                break
        start = rng.randint(0, len(tokens[i]) - seqlen)
        windows.append(tokens[i][start : start + seqlen])
    return torch.tensor(windows, dtype=torch.long)


def check_rows(tokenizer: PreTrainedTokenizerBase, rows: Sequence[str], nsamples: int, seqlen: int) -> None:
    """Refuse rows with fewer than ``nsamples`` rows of ``seqlen`` tokens (the official loop never ends)."""
    long_rows = (
        sum(len(ids) >= seqlen for ids in tokenizer(list(rows), verbose=False)["input_ids"]) if rows else 0
    )
    if long_rows < nsamples:
        raise PrunebenchError(
            f"llm-pruner: the calibration text has {long_rows} rows (non-empty lines) of at least {seqlen} "
            f"tokens, fewer than nsamples={nsamples}; the official recipe draws distinct rows that long"
        )


class _DatasetRows(Sequence[str]):
    """The ``text`` column of a Hugging Face data set, read row by row (BookCorpus has 74 M rows)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        return self.dataset[i]["text"]


def bookcorpus_rows() -> Sequence[str]:
    """All rows of BookCorpus' train split, as ``load_dataset('bookcorpus', split='train')`` officially
    (read from the Hub's Parquet conversion, :data:`prunebench.data.hub.BOOKCORPUS`)."""
    from prunebench.data.hub import BOOKCORPUS

    return _DatasetRows(BOOKCORPUS.dataset("train"))


# ---------------------------------------------------------------------------------------------- steps 2-3


def _weights(adapter: ModelAdapter, layer: int) -> dict[str, nn.Parameter]:
    attn, mlp = adapter.attention(layer), adapter.mlp(layer)
    return {
        **{name: getattr(attn, name).weight for name in ATTENTION},
        **{name: getattr(mlp, name).weight for name in MLP},
    }


def _backward(model: nn.Module, calibration: torch.Tensor, batch_size: int) -> None:
    """Accumulate ``∂L/∂W`` of the mean token loss over all rows, ``batch_size`` rows at a time."""
    device = next(model.parameters()).device
    rows = calibration.shape[0]
    for batch in calibration.to(device).split(batch_size):
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        (loss * (batch.shape[0] / rows)).backward()


def taylor_saliences(
    adapter: ModelAdapter, calibration: torch.Tensor, importance: str, batch_size: int
) -> dict[str, torch.Tensor]:
    """Per-channel Taylor importance of each projection in every layer (steps 2-3), float64.

    Returns ``{name: [num_layers, channels]}`` for the seven projections: output rows of q/k/v/gate/up,
    input columns of o_proj/down_proj. ``requires_grad`` flags and ``.grad`` are restored afterwards.
    """
    model = adapter.model
    params = [_weights(adapter, i) for i in range(adapter.num_layers)]
    flags = {p: p.requires_grad for p in model.parameters()}
    was_training = model.training
    fisher: list[dict[str, torch.Tensor]] = []
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
        for p in (p for layer in params for p in layer.values()):
            p.requires_grad_(True)
        with torch.enable_grad():
            if importance in ("param_second", "param_mix"):
                fisher = _fisher(model, params, calibration)
            _backward(model, calibration, batch_size)
        out: dict[str, list[torch.Tensor]] = {name: [] for name in (*ATTENTION, *MLP)}
        for layer, weights in enumerate(params):
            for name, w in weights.items():
                f = fisher[layer][name] if fisher else None
                out[name].append(_channel_importance(w, w.grad, f, importance, name in INPUT_SIDE))
    finally:
        for p, flag in flags.items():
            p.grad = None
            p.requires_grad_(flag)
        model.train(was_training)
    return {name: torch.stack(vectors).cpu() for name, vectors in out.items()}


def _fisher(
    model: nn.Module, params: list[dict[str, nn.Parameter]], calibration: torch.Tensor
) -> list[dict[str, torch.Tensor]]:
    """``(1/n) Σ_n g_n ⊙ g_n`` with ``g_n`` the gradient of sample ``n``'s own mean loss (official acc_grad)."""
    n = calibration.shape[0]
    acc = [{name: torch.zeros_like(p, dtype=torch.float32) for name, p in layer.items()} for layer in params]
    for row in calibration.split(1):
        _backward(model, row, 1)
        for layer, weights in zip(acc, params, strict=True):
            for name, p in weights.items():
                layer[name] += p.grad.float().pow(2) / n
                p.grad = None
    return acc


def _channel_importance(
    weight: torch.Tensor, grad: torch.Tensor, fisher: torch.Tensor | None, importance: str, input_side: bool
) -> torch.Tensor:
    """One number per output row (or input column) of ``S`` (step 3)."""
    w = weight.detach().double()
    first = w * grad.double()
    if importance == "param_second":
        salience = w * fisher.double() * w
    elif importance == "param_mix":
        salience = first - 0.5 * w * fisher.double() * w
    else:
        salience = first
    dim = 0 if input_side else 1
    if importance == "vectorize":
        return salience.sum(dim).abs()
    return salience.abs().sum(dim)


# ---------------------------------------------------------------------------------------------- steps 4-5


def fold(vector: torch.Tensor, adapter: ModelAdapter, alignment: str) -> torch.Tensor:
    """Query-side channel scores ``[L, H·hd]`` folded onto the KV channels ``[L, H_kv·hd]`` (step 5).

    ``official``: ``v.view(g, H_kv·hd).sum(0)`` per layer, KV channel ``c`` ← query channels
    ``c + t·H_kv·hd``. ``consecutive``: KV channel ``(j, e)`` ← channel ``e`` of query heads ``j·g+t``.
    """
    layers, hd, n_kv, g = vector.shape[0], adapter.head_dim, adapter.num_kv_heads, adapter.group_size
    if alignment == "official":
        return vector.view(layers, g, n_kv * hd).sum(1)
    return vector.view(layers, n_kv, g, hd).sum(2).reshape(layers, n_kv * hd)


def _reduce(stacked: torch.Tensor, strategy: str) -> torch.Tensor:
    """The official ``_reduce`` over the group's matrices (dim 0 of ``stacked``)."""
    if strategy == "sum":
        return stacked.sum(0)
    if strategy == "mean":
        return stacked.mean(0)
    if strategy == "max":
        return stacked.max(0).values
    if strategy == "prod":
        return stacked.prod(0)
    return stacked[0] if strategy == "first" else stacked[1]


def unit_scores(
    saliences: dict[str, torch.Tensor], adapter: ModelAdapter, strategy: str, alignment: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(KV-group scores [L, H_kv], MLP-channel scores [L, m])`` from :func:`taylor_saliences` (steps 4-5)."""
    if adapter.group_size == 1:  # hf_prune.py: root q_proj, listed q, o, v, k
        order = [saliences[n] for n in ("q_proj", "o_proj", "v_proj", "k_proj")]
    else:  # llama3.py: root k_proj, listed k, o, v, q
        q, o = (fold(saliences[n], adapter, alignment) for n in ("q_proj", "o_proj"))
        order = [saliences["k_proj"], o, saliences["v_proj"], q]
    channels = _reduce(torch.stack(order), strategy)
    heads = channels.view(adapter.num_layers, adapter.num_kv_heads, adapter.head_dim).sum(-1)
    mlp = _reduce(torch.stack([saliences[n] for n in MLP]), strategy)
    return heads, mlp


# ---------------------------------------------------------------------------------------------- step 6


def removed_counts(adapter: ModelAdapter, ratio: float) -> tuple[int, int]:
    """Per pruned layer: ``((C − int(C·(1 − r))) // head_dim, m − int(m·(1 − r)))`` with ``C = H_kv·head_dim``."""
    return _removed(adapter.num_kv_heads, adapter.head_dim, adapter.intermediate_size, ratio)


def _removed(kv_heads: int, head_dim: int, m: int, ratio: float) -> tuple[int, int]:
    c = kv_heads * head_dim
    return (c - int(c * (1 - ratio))) // head_dim, m - int(m * (1 - ratio))


@functools.lru_cache(maxsize=16)
def _steps(kv_heads: int, head_dim: int, m: int) -> tuple[float, ...]:
    """Every native ``r`` at which a count steps (0 included) and no layer loses all its units, ascending."""
    steps = {0.0}
    for kind, n in enumerate((kv_heads, m)):
        steps |= {
            first_ratio(lambda r, k=kind: _removed(kv_heads, head_dim, m, r)[k], c) for c in range(1, n)
        }

    def leaves_units(r: float) -> bool:
        groups, channels = _removed(kv_heads, head_dim, m, r)
        return groups < kv_heads and channels < m

    return tuple(r for r in sorted(steps) if leaves_units(r))


def _rule(adapter: ModelAdapter, attn: range, mlp: range) -> str:
    c, m = adapter.num_kv_heads * adapter.head_dim, adapter.intermediate_size
    return (
        f"LLM-Pruner's rule ((C - int(C*(1-r))) // {adapter.head_dim} of {adapter.num_kv_heads} KV groups, C={c}, "
        f"and {m} - int({m}*(1-r)) of {m} channels removed in attention layers {attn.start}-{attn.stop - 1} "
        f"and MLP layers {mlp.start}-{mlp.stop - 1})"
    )


def native_counts(adapter: ModelAdapter, ratio: float, attn: range, mlp: range) -> UniformCounts:
    """The counts for the native ratio ``r``; one that removes every unit of a layer raises."""
    groups, channels = removed_counts(adapter, ratio)
    if groups >= adapter.num_kv_heads or channels >= adapter.intermediate_size:
        raise PrunebenchError(
            f"llm-pruner: pruning ratio r={ratio} removes {groups} of {adapter.num_kv_heads} KV groups and "
            f"{channels} of {adapter.intermediate_size} MLP channels per layer; removing all of either is not "
            "possible (the official code then skips the layer without a word)"
        )
    return UniformCounts(ratio, groups, channels, Costs(adapter, attn, mlp).ratio(groups, channels))


def counts_for(
    adapter: ModelAdapter, target_ratio: float, budget: str, attn: range, mlp: range
) -> UniformCounts:
    """The counts for the study ratio (``budget=decoder``: the closest step, within 0.02) or for ``r`` itself."""
    if budget == "native":
        return native_counts(adapter, target_ratio, attn, mlp)
    costs = Costs(adapter, attn, mlp)
    options = []
    for r in _steps(adapter.num_kv_heads, adapter.head_dim, adapter.intermediate_size):
        groups, channels = removed_counts(adapter, r)
        options.append(UniformCounts(r, groups, channels, costs.ratio(groups, channels)))
    return closest(options, target_ratio, "llm-pruner", _rule(adapter, attn, mlp))


def keep_lowest_removed(scores: torch.Tensor, remove: int, layers: range) -> torch.Tensor:
    """Masks ``[L, n]``: in ``layers`` the ``remove`` lowest scores of each row go (stable), elsewhere all stay."""
    keep = torch.ones_like(scores, dtype=torch.bool)
    if remove > 0:
        for layer in layers:
            keep[layer, torch.sort(scores[layer], stable=True).indices[:remove]] = False
    return keep


# ---------------------------------------------------------------------------------------------- method


@register("llm-pruner")
class LLMPruner(Method):
    """LLM-Pruner: Taylor-scored dependency groups (heads by KV group, MLP channels), uniform in layers 4..L-3.

    See the module docstring for the step-by-step mapping to the official code.
    """

    Config = LLMPrunerConfig
    families = ("llama",)
    no_streaming = "its Taylor importance needs the gradient of a full-model backward pass"

    def check_model(self, model: nn.Module, config: MethodConfig | None = None) -> None:
        """Llama only (the official scripts load ``LlamaForCausalLM``); the layer ranges must fit the model."""
        super().check_model(model, config)
        if isinstance(config, LLMPrunerConfig):
            for part in ("attn", "mlp"):
                config.layer_range(part, get_adapter(model).num_layers)

    def calibration(
        self, tokenizer: PreTrainedTokenizerBase, source: str, config: MethodConfig
    ) -> torch.Tensor:
        """The official draw (step 1) from BookCorpus, or from the non-empty lines of a local text."""
        if source == "bookcorpus":
            rows = bookcorpus_rows()
        else:
            from prunebench.data import load_text

            rows = [line for line in load_text(source, "train").splitlines() if line.strip()]
            check_rows(tokenizer, rows, config.nsamples, config.seqlen)
        return example_windows(tokenizer, rows, config.nsamples, config.seqlen, config.seed)

    def score(self, model: nn.Module, calibration: torch.Tensor, config: LLMPrunerConfig) -> Scores:
        """Per-channel Taylor importance of every projection of every layer (ratio-independent)."""
        self.check_model(model, config)
        adapter = get_adapter(model)
        if not adapter.is_dense():
            raise PrunebenchError("llm-pruner scores a dense model, but this model is already pruned")
        if calibration.dim() != 2 or calibration.dtype != torch.long or min(calibration.shape) < 1:
            raise PrunebenchError(
                f"llm-pruner: calibration must be a non-empty [nsamples, seqlen] LongTensor, got {tuple(calibration.shape)}"
            )
        if calibration.shape[1] < 2:
            raise PrunebenchError("llm-pruner: calibration rows need at least 2 tokens for a next-token loss")
        tensors = taylor_saliences(adapter, calibration, config.importance, config.batch_size)
        meta = {
            "method": "llm-pruner",
            "importance": config.importance,
            "nsamples": int(calibration.shape[0]),
            "seqlen": int(calibration.shape[1]),
            **adapter.shape_meta(),
        }
        return Scores(tensors=tensors, meta=meta)

    def check_ratio(self, model: nn.Module, target_ratio: float, config: LLMPrunerConfig) -> None:
        """The ratio lies in [0, 1), the layer ranges fit, and the official counts can realise the ratio."""
        super().check_ratio(model, target_ratio, config)
        self.check_model(model, config)
        adapter = get_adapter(model)
        attn, mlp = (config.layer_range(part, adapter.num_layers) for part in ("attn", "mlp"))
        counts_for(adapter, target_ratio, config.budget, attn, mlp)

    def select(
        self, scores: Scores, model: nn.Module, target_ratio: float, config: LLMPrunerConfig
    ) -> PruningPlan:
        """Per layer of the range, drop the lowest-scoring KV groups and channels (cheap)."""
        self.check_ratio(model, target_ratio, config)
        adapter = get_adapter(model)
        _check_scores(scores, adapter, config)
        attn, mlp = (config.layer_range(part, adapter.num_layers) for part in ("attn", "mlp"))
        counts = counts_for(adapter, target_ratio, config.budget, attn, mlp)
        heads, channels = unit_scores(scores.tensors, adapter, config.grouping_strategy, config.gqa_alignment)
        attn_keep = keep_lowest_removed(heads, counts.kv_groups_removed, attn)
        mlp_keep = keep_lowest_removed(channels, counts.channels_removed, mlp)
        extensions = list(EXTENSIONS)
        if adapter.group_size > 1 and config.gqa_alignment == "consecutive":
            extensions.insert(0, CONSECUTIVE)
        notes: dict[str, Any] = {
            "extensions": extensions,
            "target_ratio": target_ratio,
            "budget": config.budget,
            "native_pruning_ratio": counts.native_ratio,
            "count_rule": _rule(adapter, attn, mlp),
            "removed_kv_groups_per_layer": counts.kv_groups_removed,
            "removed_channels_per_layer": counts.channels_removed,
            "attention_layers": [attn.start, attn.stop],
            "mlp_layers": [mlp.start, mlp.stop],
            "importance": config.importance,
            "grouping_strategy": config.grouping_strategy,
            "gqa_alignment": config.gqa_alignment if adapter.group_size > 1 else "n/a (MHA)",
        }
        return width_plan(adapter, "llm-pruner", config, target_ratio, attn_keep, mlp_keep, notes)


def _check_scores(scores: Scores, adapter: ModelAdapter, config: LLMPrunerConfig) -> None:
    meta = scores.meta
    if meta.get("method") != "llm-pruner" or any(name not in scores.tensors for name in (*ATTENTION, *MLP)):
        raise PrunebenchError(f"these scores were made by {meta.get('method')!r}, not by llm-pruner")
    if meta.get("importance") != config.importance:
        raise PrunebenchError(
            f"llm-pruner: the scores use importance {meta.get('importance')!r} but the config asks for "
            f"{config.importance!r}; score again"
        )
    keys = ("num_layers", "num_kv_heads", "group_size", "head_dim", "intermediate_size")
    expected = tuple(getattr(adapter, k) for k in keys)
    found = tuple(meta.get(k) for k in keys)
    if found != expected or not adapter.is_dense():
        raise PrunebenchError(f"llm-pruner scores are for shapes {found}, but the model has {expected}")
