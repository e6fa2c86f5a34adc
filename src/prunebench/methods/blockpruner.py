"""BlockPruner (Zhong et al., 2024; official code MrGGLS/BlockPruner, `block_search.py`)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from prunebench.data.calibration import check_enough_tokens, token_ids
from prunebench.data.hub import ALPACA, HubSource
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
from prunebench.methods.greedy_search import CandidateList, Criterion, DecoderRunner, search
from prunebench.methods.greedy_stream import StreamedDecoder
from prunebench.methods.registry import register
from prunebench.methods.removal_order import Removal
from prunebench.models import get_adapter

BLOCK_TYPES = ("mix", "mha", "mlp")


@dataclass(frozen=True)
class BlockPrunerConfig(MethodConfig):
    """Official defaults: Alpaca calibration, 256 examples (the paper; argparse default 128) joined and cut
    into 2048-token rows, `transformers.set_seed(42)`, mode `mix`, batch 2 (README/`block_search.sh`).

    `max_steps`: the search length (`--del-block-num`); 0 runs to the end (every candidate removed).
    `max_ratio`: stop once the removals reach this decoder ratio (ours; 0: no limit); the order up to
    there is the longer search's, so every ratio up to `max_ratio` gets the same plan.
    `cache_gb`: memory for the search's hidden-state cache (ours; it changes speed, never the order); streamed
    (`score --stream`), as many candidates run together as have their states within it).
    `device_cache_gb`: of that cache, at most this much on the compute device, the rest in CPU memory
    (ours; 0: no bound; speed only, the order is the same).
    """

    calib_dataset: str = "alpaca"
    nsamples: int = 256
    seqlen: int = 2048
    seed: int = 42
    block_type: str = "mix"
    batch_size: int = 2
    max_steps: int = 0
    max_ratio: float = 0.0
    cache_gb: float = 8.0
    device_cache_gb: float = 0.0

    def check(self) -> None:
        super().check()
        if self.block_type not in BLOCK_TYPES:
            raise PrunebenchError(
                f"block_type must be one of {', '.join(BLOCK_TYPES)}, got {self.block_type!r}"
            )
        check_search_budget(
            self.max_steps, self.max_ratio, self.batch_size, self.cache_gb, self.device_cache_gb
        )


def candidate_list(num_layers: int, block_type: str) -> CandidateList:
    """The official candidate list: every MHA block not yet removed, then every MLP block (by layer)."""
    listed = []
    if block_type != "mlp":
        listed += [Removal(i, "attn") for i in range(num_layers)]
    if block_type != "mha":
        listed += [Removal(i, "mlp") for i in range(num_layers)]

    def candidates(order: list[Removal]) -> list[Removal]:
        return [c for c in listed if c not in order]

    return candidates


class CalibrationPerplexity(Criterion):
    """Perplexity as the official `utils.evaluate_ppl` defines it.

    Per row: the mean next-token cross-entropy over tokens whose label is not the pad token (masking only
    when `pad_token_id` is truthy, as in the official code); the score is exp(mean of the row means).
    Cross-entropy is taken on fp32 logits (the official code takes it in the model's dtype).
    """

    def __init__(self, batches: list[torch.Tensor], pad_token_id: int | None):
        self.rows = sum(int(b.shape[0]) for b in batches)
        self.pad = pad_token_id if pad_token_id else None
        self.ignore = -100 if self.pad is None else self.pad
        self.labels = [next_token_labels(b, self.ignore) for b in batches]
        self.counted = [(labels[:, :-1] != self.ignore).sum(dim=1) for labels in self.labels]

    def row_values(self, logits: torch.Tensor, batch_index: int) -> list[float]:
        """Per row: summed token losses (0 at pad labels) over the number of counted tokens."""
        nll = next_token_nll(logits, self.labels[batch_index], ignore_index=self.ignore)
        return (nll.sum(dim=1) / self.counted[batch_index].to(logits.device)).double().tolist()

    def finalize(self, total: float) -> float:
        return math.exp(total / self.rows)


def example_rows(
    tokenizer: PreTrainedTokenizerBase, examples: list[str], nsamples: int, seqlen: int, seed: int
) -> torch.Tensor:
    """The official calibration: `nsamples` examples drawn with Python's `random.sample` after
    `set_seed(seed)`, joined with blank lines, tokenized once (the tokenizer's own special tokens) and
    cut into ⌊tokens / seqlen⌋ rows of `seqlen` tokens; the remainder is dropped."""
    if nsamples > len(examples):
        raise PrunebenchError(
            f"blockpruner: {nsamples} calibration examples requested, the pool has {len(examples)}"
        )
    picked = random.Random(seed).sample(range(len(examples)), nsamples)
    text = "\n\n".join(examples[i] for i in picked)
    ids = torch.tensor(token_ids(tokenizer, text, add_special_tokens=True), dtype=torch.long)
    check_enough_tokens(
        ids.numel(),
        seqlen,
        f"one row of seqlen={seqlen} tokens",
        f"blockpruner: the {nsamples} calibration examples",
    )
    rows = ids.numel() // seqlen
    return ids[: rows * seqlen].reshape(rows, seqlen)


def alpaca_pool() -> list[str]:
    """The official calibration pool: the formatted `text` of tatsu-lab/alpaca, split 80/20 (seed 42)
    and the 20% split in half (seed 42); the first half (the official "test" set) is the pool."""
    rows = ALPACA.dataset("train").select_columns(["text"])
    held_out = rows.train_test_split(test_size=0.2, seed=42)["test"]
    return list(held_out.train_test_split(test_size=0.5, seed=42)["train"]["text"])


def text_examples(text: str) -> list[str]:
    """Examples of a plain-text source: its non-empty lines, i.e. paragraphs (ours, for local data)."""
    return [line.strip() for line in text.splitlines() if line.strip()]


@register("blockpruner")
class BlockPruner(GreedyOrderMethod):
    """BlockPruner: greedy removal of MHA/MLP sublayers by calibration perplexity, re-scored every step.

    Faithful to the official `block_search_by_ppl`: each layer holds two minimal residual blocks (MHA:
    input norm + attention; MLP: post-attention norm + MLP). At every step each remaining block is removed
    on top of the blocks removed so far, the calibration perplexity is measured, and the block with the
    lowest perplexity is removed for good (ties: first in the official list, all MHA blocks then all MLP
    blocks). `block_type` restricts candidates to `mha` or `mlp`. The search runs once (to `max_steps` or
    to the end) and every ratio is a prefix of its order (`plan_from_order`, real parameter counts).
    Ours: the search is computed with `greedy_search` (prefix cache, candidate memo, early abandoning), which returns the
    naive search's order, resident or with streamed weights (`score --stream`); the result is physically pruned rather than masked.

    Ratio to count: the official code takes a count of sublayers (`--del-block-num`) and reports the
    resulting parameter ratio. Here the count is the fewest steps whose parameters reach the study's
    decoder ratio (a ceiling in parameters, `plan_from_order`), recorded in the plan notes.
    """

    Config = BlockPrunerConfig
    #: calib_dataset ``alpaca`` reads tatsu-lab/alpaca's formatted text (the official pool), not Alpaca-cleaned.
    hub_data: ClassVar[dict[str, HubSource]] = {"alpaca": ALPACA}

    def calibration(
        self, tokenizer: PreTrainedTokenizerBase, source: str, config: MethodConfig, encoding: str = "utf-8"
    ) -> torch.Tensor:
        """Official calibration rows from `source` (the official Alpaca pool, or the lines of a text)."""
        from prunebench.data import load_text

        examples = (
            alpaca_pool() if source == "alpaca" else text_examples(load_text(source, "train", encoding))
        )
        return example_rows(tokenizer, examples, config.nsamples, config.seqlen, config.seed)

    def _steps(self, model: nn.Module, config: BlockPrunerConfig) -> int:
        total = len(candidate_list(get_adapter(model).num_layers, config.block_type)([]))
        return min(config.max_steps, total) if config.max_steps else total

    def check_ratio(self, model: nn.Module, target_ratio: float, config: MethodConfig) -> None:
        super().check_ratio(model, target_ratio, config)
        check_within_search(target_ratio, config.max_ratio, self.name)
        allowed = candidate_list(get_adapter(model).num_layers, config.block_type)([])
        check_reachable(model, allowed, self._steps(model, config), target_ratio, self.name)

    def search_order(
        self, runner: DecoderRunner | StreamedDecoder, model: nn.Module, steps: int, config: MethodConfig
    ) -> Scores:
        num_layers = get_adapter(model).num_layers
        criterion = CalibrationPerplexity(runner.batches, model.config.pad_token_id)
        result = search(
            runner,
            criterion,
            candidate_list(num_layers, config.block_type),
            steps,
            self.name,
            cache_gb=config.cache_gb,
            device_cache_gb=config.device_cache_gb,
            stop=ratio_stop(model, config.max_ratio),
        )
        return scores_from_search(
            result, {"num_layers": num_layers, "unit": "sublayer", "score": "calibration perplexity"}
        )
