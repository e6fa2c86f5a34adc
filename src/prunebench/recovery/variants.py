"""Registry of recovery variants: the only list of them. A variant is a sequence of phases that
share the budget equally (``lora`` or ``cpt`` phases), plus optionally per-layer LoRA ranks."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.recovery.cfsp_lora import (
    allocate_ranks,
    angular_importance,
    importance_from_scores,
    sigmoid_importance,
)
from prunebench.recovery.config import RecoveryConfig
from prunebench.recovery.data import SequenceData
from prunebench.recovery.lora import decoder_layers


@dataclass(frozen=True)
class RankContext:
    """What a variant may use to choose per-layer LoRA ranks."""

    model: nn.Module
    model_dir: str
    data: SequenceData  # the LoRA phase's training data
    config: RecoveryConfig
    scores_dir: str | None


class Variant:
    """A recovery variant. ``phases`` names its training phases in order."""

    name: str = ""
    phases: tuple[str, ...] = ()

    def layer_ranks(self, ctx: RankContext) -> tuple[list[int] | None, dict]:
        """Per-layer LoRA ranks (None = uniform ``lora_r``) and notes for the summary."""
        return None, {}

    def split_budget(self, steps: int) -> list[int]:
        """Equal shares of the steps, the earlier phases rounding down."""
        if steps < len(self.phases):
            raise PrunebenchError(
                f"variant {self.name} has {len(self.phases)} phases and needs a budget of at least "
                f"{len(self.phases)} steps, got {steps}"
            )
        shares = [steps // len(self.phases)] * len(self.phases)
        shares[-1] += steps - sum(shares)
        return shares


VARIANTS: dict[str, Variant] = {}


def register(name: str):
    """Class decorator adding a variant to the registry under ``name``."""

    def wrap(cls: type[Variant]) -> type[Variant]:
        cls.name = name
        VARIANTS[name] = cls()
        return cls

    return wrap


def available_variants() -> list[str]:
    return sorted(VARIANTS)


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        close = difflib.get_close_matches(name, VARIANTS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise PrunebenchError(
            f"unknown recovery variant {name!r}{hint} (available: {', '.join(available_variants())})"
        )
    return VARIANTS[name]


def check_parallel(config: RecoveryConfig, variant: Variant) -> None:
    """``parallel: fsdp`` shards full training: a variant without a CPT phase is a ``PrunebenchError``."""
    if config.parallel == "fsdp" and "cpt" not in variant.phases:
        raise PrunebenchError(
            f"recovery option parallel fsdp shards full training (cpt phases); variant {variant.name} has "
            "none: use parallel ddp"
        )


@register("lora")
class Lora(Variant):
    """LoRA (LLM-Pruner / Shortened-LLaMA defaults), merged into the weights after training."""

    phases = ("lora",)


@register("cpt")
class ContinuedPretraining(Variant):
    """Continued pretraining of all weights (Shortened-LLaMA's AdamW settings)."""

    phases = ("cpt",)


@register("cpt_lora")
class CptThenLora(Variant):
    """Continued pretraining, then LoRA (Shortened-LLaMA's CPT⇒LoRA), half of the budget each."""

    phases = ("cpt", "lora")


@register("cfsp_lora")
class CfspLora(Variant):
    """LoRA with per-layer ranks proportional to CFSP's coarse layer importance (our reading)."""

    phases = ("lora",)

    def layer_ranks(self, ctx: RankContext) -> tuple[list[int] | None, dict]:
        num_layers = len(decoder_layers(ctx.model))
        key = ctx.config.cfsp_importance
        if ctx.scores_dir is not None:
            importance = importance_from_scores(ctx.scores_dir, ctx.model_dir, num_layers, key)
            source = f"{key} from CFSP scores {ctx.scores_dir}"
        else:
            n = min(ctx.config.importance_nsamples, len(ctx.data))
            batch = ctx.data.stream_batch(0, n)
            size = ctx.config.micro_batch
            chunks = [{k: v[i : i + size] for k, v in batch.items()} for i in range(0, n, size)]
            importance = angular_importance(ctx.model, chunks)
            if key == "coarse_importance":
                importance = sigmoid_importance(importance)
            source = f"{key} measured on the pruned model, {n} training sequences"
        ranks = allocate_ranks(importance, ctx.config.lora_r)
        notes = {"importance": [float(x) for x in importance], "importance_source": source, "ranks": ranks}
        return ranks, notes
