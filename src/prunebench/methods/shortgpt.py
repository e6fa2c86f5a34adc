"""ShortGPT (Men et al., 2024, "Layers in Large Language Models are More Redundant Than You Expect"):
delete the decoder layers with the lowest Block Influence, in one shot, without retraining.

No official code was published; this follows the paper's definition:

1. One forward pass of the dense model over the calibration rows.
2. Block Influence of layer i: BI_i = 1 − mean over all calibration tokens t of
   cos(x_{i,t}, x_{i+1,t}), the cosine between the hidden state entering layer i and the one leaving
   it. Both are read from the residual stream with hooks on the layer itself. HF's
   ``output_hidden_states`` would give the wrong state for the last layer: its last entry is taken
   after the model's final RMSNorm, so the last layer's BI would compare a pre-norm input with a
   post-norm output. :func:`block_influence`.
3. Layers sorted by ascending BI (ties to the lower index); the shortest prefix reaching the study's
   decoder ratio is deleted (a ceiling in parameters: the fewest layers whose parameters reach it),
   giving a plain HF checkpoint with fewer layers. The paper's knob is a number of layers, recorded in
   the plan notes; the llm_dissect reimplementation floors a fraction of layers, ``int(sparsity·L)``.

Calibration: the paper profiles on PG19 (``dataset = "pg19"``); the number and length of the rows used
are not stated in the sources we could read, so ``nsamples``/``seqlen`` are our choice (labelled).
Cosines are computed in float32 whatever the model dtype.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from prunebench.errors import PrunebenchError
from prunebench.methods import MethodConfig, register
from prunebench.methods.block_ranking import BlockRanking
from prunebench.models import get_adapter
from prunebench.models.streaming import LayerProbe, Runner


@dataclasses.dataclass(frozen=True)
class ShortGPTConfig(MethodConfig):
    """Paper calibration set (PG19); sample count and length are ours (not stated in the paper)."""

    calib_dataset: str = "pg19"
    nsamples: int = 128
    seqlen: int = 2048
    seed: int = 0
    batch_size: int = 8

    def check(self) -> None:
        super().check()
        if self.batch_size <= 0:
            raise PrunebenchError(f"batch_size must be > 0, got {self.batch_size}")


def block_influence(runner: Runner, calibration: torch.LongTensor, batch_size: int) -> torch.Tensor:
    """BI_i = 1 − token-mean cos(input of layer i, output of layer i), pre-norm states (step 2).

    ``runner``: the model resident (:class:`~prunebench.models.streaming.ResidentRunner`) or streamed
    layer by layer (:class:`~prunebench.models.streaming.StreamingRunner`); the values are the same.
    """
    n = get_adapter(runner.model).num_layers
    cos_sum = torch.zeros(n, dtype=torch.float64)

    def accumulate(index: int, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
        cos = F.cosine_similarity(inputs.float(), outputs.float(), dim=-1)
        cos_sum[index] += float(cos.double().sum())

    runner.run(calibration, batch_size, LayerProbe(on_output=accumulate), "shortgpt calibration")
    return 1.0 - cos_sum / calibration.numel()


@register("shortgpt")
class ShortGPT(BlockRanking):
    """ShortGPT: delete the layers whose input and output hidden states are most alike (lowest BI).

    See the module docstring for the steps; scores are per-layer Block Influence (``block_influence``),
    ranked and cut by :class:`BlockRanking` (step 3)."""

    Config = ShortGPTConfig
    score_key = "block_influence"
    measure = staticmethod(block_influence)
    no_streaming = None
