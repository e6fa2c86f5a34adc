"""FinerCut (Zhang et al., 2024; official code YaNgZhAnG-V5/llm_dissect, `scripts/prune_layer.py`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedTokenizerBase

from prunebench.data.calibration import check_enough_tokens, token_ids
from prunebench.errors import PrunebenchError
from prunebench.methods.base import MethodConfig, Scores
from prunebench.methods.greedy_method import (
    GreedyOrderMethod,
    check_reachable,
    check_search_budget,
    check_within_search,
    ratio_stop,
    scores_from_search,
)
from prunebench.methods.greedy_search import Criterion, DecoderRunner, search
from prunebench.methods.greedy_stream import StreamedDecoder
from prunebench.methods.registry import register
from prunebench.methods.removal_order import Removal
from prunebench.models import get_adapter

PRUNE_LEVELS = {"am": ("attn", "mlp"), "a": ("attn",), "m": ("mlp",)}
DIVERGENCES = ("js_code", "js")
MODULE_NAMES = {"attn": "self_attn.o_proj", "mlp": "mlp.down_proj"}


@dataclass(frozen=True)
class FinerCutConfig(MethodConfig):
    """Official defaults: the first 10 × 256 tokens of WikiText-2 train, `-p loss` (greedy), `-x 0.4`
    (README command), `--prune-level am`, `js_divergence` (the submission configs), batch size 1.

    `divergence`: `js_code` is what the official code computes; `js` is the textbook Jensen–Shannon
    divergence (ours, labelled option). `max_steps`: 0 runs to the end as the official loop does;
    `max_ratio`: stop once the removals reach this decoder ratio (ours; 0: no limit).
    `cache_gb`: memory for the search's hidden-state cache (ours; speed only); streamed
    (`score --stream`), as many candidates run together as have their states within it).
    `device_cache_gb`: of that cache, at most this much on the compute device, the rest in CPU memory
    (ours; 0: no bound; speed only, the order is the same).
    """

    calib_dataset: str = "wikitext2"
    nsamples: int = 10
    seqlen: int = 256
    seed: int = 0
    prune_level: str = "am"
    exclude: float = 0.4
    divergence: str = "js_code"
    batch_size: int = 1
    max_steps: int = 0
    max_ratio: float = 0.0
    cache_gb: float = 8.0
    device_cache_gb: float = 0.0

    def check(self) -> None:
        super().check()
        if self.prune_level not in PRUNE_LEVELS:
            raise PrunebenchError(
                f"prune_level must be one of {', '.join(PRUNE_LEVELS)}, got {self.prune_level!r}"
            )
        if self.divergence not in DIVERGENCES:
            raise PrunebenchError(
                f"divergence must be one of {', '.join(DIVERGENCES)}, got {self.divergence!r}"
            )
        if not 0 <= self.exclude < 1:
            raise PrunebenchError(f"exclude must be in [0, 1), got {self.exclude}")
        check_search_budget(
            self.max_steps, self.max_ratio, self.batch_size, self.cache_gb, self.device_cache_gb
        )


def module_name(removal: Removal) -> str:
    """The official candidate name: the sublayer's output projection."""
    return f"model.layers.{removal.layer}.{MODULE_NAMES[removal.part]}"


@dataclass(frozen=True)
class ExclusionSchedule:
    """The official front-layer exclusion (`get_target_layers`, `-x`).

    With n candidates, layers 0 .. int(n·x/2) (both sublayers) are left out of the candidate list until
    int(n·x) + 1 removals have been made; then they are appended after the remaining candidates. Note
    that even x = 0 excludes layer 0 from the first step (official quirk, kept).
    """

    targets: tuple[Removal, ...]
    excluded: tuple[Removal, ...]
    readmit_after: int

    @classmethod
    def build(cls, num_layers: int, prune_level: str, exclude: float) -> ExclusionSchedule:
        everything = [Removal(i, part) for i in range(num_layers) for part in PRUNE_LEVELS[prune_level]]
        everything.sort(key=module_name)  # lexicographic module names, as the official list
        n = len(everything)
        front = int(n * exclude / 2) + 1
        excluded = tuple(r for r in everything if r.layer < front)
        targets = tuple(r for r in everything if r.layer >= front)
        return cls(targets, excluded, int(n * exclude) + 1)

    def steps_possible(self) -> int:
        """How many steps the official loop can take before its candidate list runs dry."""
        if len(self.targets) < self.readmit_after:
            return len(self.targets)
        return len(self.targets) + len(self.excluded)

    def candidates(self, order: list[Removal]) -> list[Removal]:
        listed = list(self.targets)
        if len(order) >= self.readmit_after:
            listed += self.excluded
        return [c for c in listed if c not in order]


class OutputDivergence(Criterion):
    """Divergence between the dense model's and the pruned model's next-token distributions.

    `js_code` (official `compare_outputs_js_divergence`): with P, Q the dense and pruned softmax and
    M = (P+Q)/2, ½·[mean KL-term of M against P + mean KL-term of M against Q], where the means run
    over every element (rows × tokens × vocabulary), i.e. `F.kl_div(log P, M, reduction="mean")`: the
    reversed direction, divided by the vocabulary size. `js` (ours, labelled): ½[KL(P‖M) + KL(Q‖M)]
    averaged over tokens. Element terms in fp32 as in the official code (written as
    2·M·log M − M·(log P + log Q), the same sum in one pass), summed per row in float64.
    """

    # Per token the divergence is >= 0; fp32 rounding of its terms stays far above this floor.
    floor_per_token = -1e-4

    def __init__(self, reference_logits: list[torch.Tensor], divergence: str):
        self.log_p = [F.log_softmax(z.float(), dim=-1) for z in reference_logits]
        self.p = [lp.exp() for lp in self.log_p]
        self.divergence = divergence
        rows, tokens, vocab = sum(int(z.shape[0]) for z in reference_logits), *reference_logits[0].shape[1:]
        self.denominator = 2 * rows * tokens * vocab if divergence == "js_code" else 2 * rows * tokens
        self.row_floor = self.floor_per_token * tokens

    def row_values(self, logits: torch.Tensor, batch_index: int) -> list[float]:
        log_p, p = self.log_p[batch_index].to(logits.device), self.p[batch_index].to(logits.device)
        log_q = F.log_softmax(logits.float(), dim=-1)
        q = log_q.exp()
        mean = 0.5 * (p + q)
        if self.divergence == "js_code":  # M(log M − log P) + M(log M − log Q)
            terms = 2 * torch.xlogy(mean, mean) - mean * (log_p + log_q)
        else:  # P(log P − log M) + Q(log Q − log M)
            terms = p * log_p + q * log_q - 2 * torch.xlogy(mean, mean)
        return terms.sum(dim=(1, 2), dtype=torch.float64).tolist()

    def finalize(self, total: float) -> float:
        return total / self.denominator


@torch.no_grad()
def reference_logits(model: nn.Module, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    """The dense model's logits on the calibration set (official `Output.collect_output_data`)."""
    device = get_adapter(model).lm_head.weight.device
    return [model(input_ids=b.to(device), use_cache=False).logits for b in batches]


def leading_rows(
    tokenizer: PreTrainedTokenizerBase, lines: list[str], nsamples: int, seqlen: int
) -> torch.Tensor:
    """Official `build_wikitext_dataset`: drop empty lines, join the rest with a space, tokenize once
    (the tokenizer's own special tokens), keep the first nsamples × seqlen tokens as rows."""
    text = " ".join(line for line in lines if len(line) > 0)
    ids = torch.tensor(token_ids(tokenizer, text, add_special_tokens=True), dtype=torch.long)
    check_enough_tokens(
        ids.numel(),
        nsamples * seqlen,
        f"nsamples x seqlen = {nsamples} x {seqlen}",
        "finercut: calibration text",
    )
    return ids[: nsamples * seqlen].reshape(nsamples, seqlen)


@register("finercut")
class FinerCut(GreedyOrderMethod):
    """FinerCut: greedy removal of attention/FFN sublayers by output divergence from the dense model.

    Faithful to the official `greedy_pruning` loop (`-p loss`): candidates are the attention and FFN
    sublayers (named by their `o_proj` / `down_proj`, in lexicographic name order); at every step each
    remaining candidate is removed on top of the previous removals and scored by the divergence of the
    model's output distribution from the dense one (`OutputDivergence`); the lowest score is removed for
    good (ties: first in the list). The front-layer exclusion schedule (`ExclusionSchedule`, `-x`) is
    reproduced. The official loop runs to the end; every ratio is a prefix (`plan_from_order`).
    Ours: `greedy_search` (prefix cache, candidate memo, early abandoning) returns the naive search's order; the result
    is physically pruned rather than replaced by identity modules.

    Ratio to count: the official script saves, for a ratio `r`, the first `int(2L * r)` sublayers of the
    order (`scripts/prune_layer.py`: a floored fraction of sublayers). The study's ratio is a fraction of
    parameters, so here the count is the fewest steps whose parameters reach it (a ceiling in
    parameters, `plan_from_order`); attention sublayers are smaller, so the two counts differ.
    """

    Config = FinerCutConfig

    def calibration(
        self, tokenizer: PreTrainedTokenizerBase, source: str, config: MethodConfig, encoding: str = "utf-8"
    ) -> torch.Tensor:
        """The first nsamples × seqlen tokens of `source`'s train split (official WikiText-2 recipe)."""
        if source == "wikitext2":
            from prunebench.data.hub import WIKITEXT2

            lines = WIKITEXT2.dataset("train")["text"]
        else:
            from prunebench.data import load_text

            lines = load_text(source, "train", encoding).splitlines(keepends=True)
        return leading_rows(tokenizer, lines, config.nsamples, config.seqlen)

    def _schedule(self, model: nn.Module, config: MethodConfig) -> ExclusionSchedule:
        return ExclusionSchedule.build(get_adapter(model).num_layers, config.prune_level, config.exclude)

    def _steps(self, model: nn.Module, config: MethodConfig) -> int:
        schedule = self._schedule(model, config)
        total = len(schedule.targets) + len(schedule.excluded)
        steps = min(config.max_steps, total) if config.max_steps else total
        if steps > schedule.steps_possible():
            raise PrunebenchError(
                f"finercut: exclude={config.exclude} leaves {len(schedule.targets)} candidates, fewer than the "
                f"{schedule.readmit_after} removals needed before the excluded front layers come back"
            )
        return steps

    def check_ratio(self, model: nn.Module, target_ratio: float, config: MethodConfig) -> None:
        super().check_ratio(model, target_ratio, config)
        check_within_search(target_ratio, config.max_ratio, self.name)
        schedule = self._schedule(model, config)
        allowed = [*schedule.targets, *schedule.excluded]
        check_reachable(model, allowed, self._steps(model, config), target_ratio, self.name)

    def search_order(
        self, runner: DecoderRunner | StreamedDecoder, model: nn.Module, steps: int, config: MethodConfig
    ) -> Scores:
        criterion = OutputDivergence(runner.dense_logits(), config.divergence)
        schedule = self._schedule(model, config)
        result = search(
            runner,
            criterion,
            schedule.candidates,
            steps,
            self.name,
            cache_gb=config.cache_gb,
            device_cache_gb=config.device_cache_gb,
            stop=ratio_stop(model, config.max_ratio),
        )
        meta = {
            "num_layers": get_adapter(model).num_layers,
            "unit": "sublayer",
            "score": f"output divergence ({config.divergence})",
            "order_names": [module_name(r) for r in result.order],
            "excluded_layers": sorted({r.layer for r in schedule.excluded}),
            "readmitted_after": schedule.readmit_after,
        }
        return scores_from_search(result, meta)
