"""SLEB (Song et al., 2024; official code jiwonsong-dev/SLEB, `sleb.py`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.methods.base import MethodConfig, Scores
from prunebench.methods.greedy_method import (
    GreedyOrderMethod,
    check_reachable,
    check_search_budget,
    check_within_search,
    next_token_labels,
    next_token_nll,
    ratio_stop,
    scores_from_search,
)
from prunebench.methods.greedy_search import Criterion, DecoderRunner, search
from prunebench.methods.greedy_stream import StreamedDecoder
from prunebench.methods.registry import register
from prunebench.methods.removal_order import Removal
from prunebench.models import get_adapter


@dataclass(frozen=True)
class SlebConfig(MethodConfig):
    """Official defaults: 128 WikiText-2 train windows of 2048 tokens, seed 0, batch 1, barriers 1 / 1.

    `max_steps`: blocks to search (`num_remove_blocks`); 0 searches every removable block.
    `max_ratio`: stop once the removed blocks reach this decoder ratio (ours; 0: no limit).
    `cache_gb`: memory for the search's hidden-state cache (ours; speed only); streamed
    (`score --stream`), as many candidates run together as have their states within it).
    `device_cache_gb`: of that cache, at most this much on the compute device, the rest in CPU memory
    (ours; 0: no bound; speed only, the order is the same).
    """

    calib_dataset: str = "wikitext2"
    nsamples: int = 128
    seqlen: int = 2048
    seed: int = 0
    early_barrier: int = 1
    latter_barrier: int = 1
    batch_size: int = 1
    max_steps: int = 0
    max_ratio: float = 0.0
    cache_gb: float = 8.0
    device_cache_gb: float = 0.0

    def check(self) -> None:
        super().check()
        if min(self.early_barrier, self.latter_barrier) < 0:
            raise PrunebenchError("early_barrier and latter_barrier must be >= 0")
        check_search_budget(
            self.max_steps, self.max_ratio, self.batch_size, self.cache_gb, self.device_cache_gb
        )


class SummedNll(Criterion):
    """The official `get_loss`: per row the mean next-token cross-entropy times the row length, summed."""

    def __init__(self, batches: list[torch.Tensor]):
        self.labels = [next_token_labels(b) for b in batches]

    def row_values(self, logits: torch.Tensor, batch_index: int) -> list[float]:
        labels = self.labels[batch_index]
        nll = next_token_nll(logits, labels).mean(dim=1)
        return (nll * labels.shape[1]).double().tolist()

    def finalize(self, total: float) -> float:
        return total


def block_candidates(num_layers: int, early: int, latter: int):
    """The official search range: alive blocks except the first `early` and the last `latter` of them."""

    def candidates(order: list[Removal]) -> list[Removal]:
        alive = [Removal(i, "block") for i in range(num_layers) if Removal(i, "block") not in order]
        return alive[early : len(alive) - latter]

    return candidates


@register("sleb")
class Sleb(GreedyOrderMethod):
    """SLEB: greedy whole-block removal by summed calibration NLL, first and last block kept.

    Faithful to the official `sleb()` loop: at each step every alive block inside the barriers is turned
    off on top of the blocks removed so far, the summed token NLL of the calibration set is computed,
    and the block with the lowest loss is removed (ties: the earliest block, strict `<`). Every ratio is
    a prefix of the resulting order (`plan_from_order`). Ours: `greedy_search` (prefix cache, candidate
    memo, early abandoning) returns the naive search's order.

    Ratio to count: the official `sleb.py` takes a count (`num_remove_blocks`); its `latency.py` turns a
    ratio into `int(np.ceil(L * r))` blocks. Here the study's decoder ratio takes the fewest blocks whose
    parameters reach it (`plan_from_order`), which for equal blocks is the same ceiling, without the
    float artefact of `np.ceil(10 * 0.3) = 4`.
    """

    Config = SlebConfig

    def _removable(self, model: nn.Module, config: MethodConfig) -> list[Removal]:
        num_layers = get_adapter(model).num_layers
        removable = block_candidates(num_layers, config.early_barrier, config.latter_barrier)([])
        if not removable:
            raise PrunebenchError(
                f"sleb: barriers {config.early_barrier}/{config.latter_barrier} leave no block of "
                f"{num_layers} to remove"
            )
        return removable

    def _steps(self, model: nn.Module, config: MethodConfig) -> int:
        total = len(self._removable(model, config))
        return min(config.max_steps, total) if config.max_steps else total

    def check_ratio(self, model: nn.Module, target_ratio: float, config: MethodConfig) -> None:
        super().check_ratio(model, target_ratio, config)
        check_within_search(target_ratio, config.max_ratio, self.name)
        check_reachable(
            model, self._removable(model, config), self._steps(model, config), target_ratio, self.name
        )

    def search_order(
        self, runner: DecoderRunner | StreamedDecoder, model: nn.Module, steps: int, config: MethodConfig
    ) -> Scores:
        num_layers = get_adapter(model).num_layers
        result = search(
            runner,
            SummedNll(runner.batches),
            block_candidates(num_layers, config.early_barrier, config.latter_barrier),
            steps,
            self.name,
            cache_gb=config.cache_gb,
            device_cache_gb=config.device_cache_gb,
            stop=ratio_stop(model, config.max_ratio),
        )
        return scores_from_search(result, {"num_layers": num_layers, "unit": "block", "score": "summed NLL"})
