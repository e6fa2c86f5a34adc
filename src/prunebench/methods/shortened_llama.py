"""Shortened LLaMA (Kim et al., 2024; official code Nota-NetsPresso/shortened-llm): one-shot removal of
whole Transformer blocks ranked by a perplexity or a Taylor criterion.

Steps of the official code and where they live here:

1. Calibration: 10 BookCorpus rows of at least 128 tokens, one random 128-token window each, seed 1234
   (``src/dataset.py:get_examples``) -- the defaults of :class:`ShortenedConfig`. Offline the study
   passes its own samples instead (``calibration: shared``).
2. PPL criterion (``anal_block_sensitivity_ppl.py``): for every block i, the model with only block i
   removed is run on every calibration row; the score is the mean next-token cross-entropy over all
   calibration tokens (the official code takes ``exp`` of it; we sort by the mean itself, which orders
   blocks identically and cannot overflow). :func:`block_removal_nll`.
3. Taylor criterion (``anal_block_sensitivity_taylor.py``): one forward/backward of the LM loss on the
   calibration batch, then per block Σ over its ``*weight*`` parameters (the seven projections and both
   RMSNorms; biases are not matched by the official name filter) of Σ|W ⊙ ∂L/∂W|. :func:`block_taylor`.
4. Blocks are sorted ascending (least important first; equal scores keep the lower index, as the
   official stable ``sorted`` does).
5. The "+" heuristic (``block_prune.py``): blocks 0-3 and the last two are dropped from the order. The
   official code applies it to every criterion unless ``--no_plus_heuristic`` is passed, and no
   official script passes it, so ``plus_heuristic`` defaults to true for both criteria.
6. One-shot removal of the first blocks of the order, all at once, into a model with fewer layers
   (``utils.get_block_pruned_network``: a plain HF checkpoint). The official knob is a number of
   blocks; here the number is the shortest prefix reaching the study's decoder ratio (a ceiling in
   parameters), recorded in the plan notes.

Our deviations, all ranking-neutral: the PPL criterion replays the dense model's layers on cached
inputs instead of rebuilding an (L-1)-layer model per block (the same computation, about half the
layer passes), computes the loss in float32 whatever the model dtype (the official code uses fp16 on
GPU), and runs ``batch_size`` rows at a time (official: one). The Taylor criterion accumulates
gradients over batches before multiplying by W (official: products accumulated); with the official
single batch of 10 they are the same.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F

from prunebench.errors import PrunebenchError
from prunebench.methods import MethodConfig, register
from prunebench.methods.block_ranking import BlockRanking, capture_layer_calls, protected_blocks, run_layer
from prunebench.models import get_adapter
from prunebench.models.adapter import ModelAdapter
from prunebench.models.streaming import Runner, progress


@dataclasses.dataclass(frozen=True)
class ShortenedConfig(MethodConfig):
    """Official defaults of shortened-llm's block-sensitivity scripts."""

    calib_dataset: str = "bookcorpus"
    nsamples: int = 10
    seqlen: int = 128
    seed: int = 1234
    plus_heuristic: bool = True
    batch_size: int = 1

    def check(self) -> None:
        super().check()
        if self.batch_size <= 0:
            raise PrunebenchError(f"batch_size must be > 0, got {self.batch_size}")


@dataclasses.dataclass(frozen=True)
class ShortenedTaylorConfig(ShortenedConfig):
    """The Taylor script's official batch holds all ten calibration rows."""

    batch_size: int = 10


def _device(adapter: ModelAdapter) -> torch.device:
    return adapter.embed_tokens.weight.device


def _token_nll_sum(adapter: ModelAdapter, hidden: torch.Tensor, input_ids: torch.Tensor) -> float:
    """Summed next-token cross-entropy of the rows ``input_ids`` given the last decoder output."""
    logits = adapter.lm_head(adapter.final_norm(hidden))[:, :-1].float()
    labels = input_ids[:, 1:]
    return float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum"))


def block_removal_nll(adapter: ModelAdapter, calibration: torch.LongTensor, batch_size: int) -> torch.Tensor:
    """Mean token NLL of the calibration rows with each block removed alone (PPL criterion, step 2).

    For each batch the dense model runs once to record each layer's arguments; then, walking down the
    dense residual stream, the state entering block i is sent through blocks i+1.. only, which is
    exactly the model without block i."""
    n = adapter.num_layers
    total = torch.zeros(n, dtype=torch.float64)
    tokens = 0
    with torch.no_grad():
        batches = calibration.to(_device(adapter)).split(batch_size)
        for batch in progress(batches, "shortened-ppl calibration", unit="batch"):
            calls = capture_layer_calls(adapter, batch)
            dense = calls.first_input
            for i in range(n):
                hidden = dense
                for j in range(i + 1, n):
                    hidden = run_layer(adapter, calls, j, hidden)
                total[i] += _token_nll_sum(adapter, hidden, batch)
                if i + 1 < n:
                    dense = run_layer(adapter, calls, i, dense)
            tokens += batch.shape[0] * (batch.shape[1] - 1)
    return total / tokens


def block_taylor(adapter: ModelAdapter, calibration: torch.LongTensor, batch_size: int) -> torch.Tensor:
    """Per-block Σ|W ⊙ ∂L/∂W| over the block's weight parameters (Taylor criterion, step 3).

    Only block weights take gradients during the pass (embeddings, final norm and LM head are not
    scored, so their gradients are never needed); ``requires_grad`` flags are restored afterwards."""
    model = adapter.model
    weights = [[p for name, p in layer.named_parameters() if "weight" in name] for layer in adapter.layers]
    flags = {p: p.requires_grad for p in model.parameters()}
    was_training = model.training
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
        for p in (p for block in weights for p in block):
            p.requires_grad_(True)
        with torch.enable_grad():
            batches = calibration.to(_device(adapter)).split(batch_size)
            for batch in progress(batches, "shortened-taylor calibration", unit="batch"):
                model(input_ids=batch, labels=batch, use_cache=False).loss.backward()
        scores = [
            sum(
                float((p.detach().double() * p.grad.double()).abs().sum()) if p.grad is not None else 0.0
                for p in block
            )
            for block in weights
        ]
    finally:
        for p, flag in flags.items():
            p.grad = None
            p.requires_grad_(flag)
        model.train(was_training)
    return torch.tensor(scores, dtype=torch.float64)


class _ShortenedLlama(BlockRanking):
    """Shared body of the two criteria (steps 4-6 via :class:`BlockRanking`); subclasses set
    ``criterion``, ``score_key`` and ``measure``."""

    Config = ShortenedConfig
    criterion: str

    def protected(self, num_layers: int, config: ShortenedConfig) -> list[int]:
        return protected_blocks(num_layers) if config.plus_heuristic else []

    def score_labels(self) -> dict[str, Any]:
        return {"criterion": self.criterion}

    def plan_labels(self, config: ShortenedConfig, protected: list[int]) -> dict[str, Any]:
        return {
            "criterion": self.criterion,
            "plus_heuristic": config.plus_heuristic,
            "protected_blocks": protected,
        }


@register("shortened-ppl")
class ShortenedPPL(_ShortenedLlama):
    """Shortened LLaMA, PPL criterion: remove the blocks whose lone removal hurts calibration PPL least.

    See the module docstring for the official steps; scores are the mean token NLL with each block
    removed (``block_nll``)."""

    criterion = "ppl"
    score_key = "block_nll"
    no_streaming = (
        "each block's score runs the blocks after it on the state before it (not implemented streamed)"
    )

    def measure(self, runner: Runner, calibration: torch.LongTensor, batch_size: int) -> torch.Tensor:
        return block_removal_nll(get_adapter(runner.model), calibration, batch_size)


@register("shortened-taylor")
class ShortenedTaylor(_ShortenedLlama):
    """Shortened LLaMA, Taylor+ criterion: remove the blocks with the least Σ|W·∂L/∂W|.

    See the module docstring for the official steps; scores are per-block Taylor sums
    (``block_taylor``)."""

    Config = ShortenedTaylorConfig
    criterion = "taylor"
    score_key = "block_taylor"
    no_streaming = "the Taylor criterion needs the gradient of a full-model backward pass"

    def measure(self, runner: Runner, calibration: torch.LongTensor, batch_size: int) -> torch.Tensor:
        return block_taylor(get_adapter(runner.model), calibration, batch_size)
