"""Typed recovery configuration and the training budget shared by every variant."""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass

from prunebench.errors import PrunebenchError
from prunebench.options import parse_option

#: The seven projections of a Llama-style decoder layer (LLM-Pruner / Shortened-LLaMA LoRA targets).
SEVEN_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SCHEDULES = ("linear", "cosine")
CFSP_IMPORTANCES = ("angular_distance", "coarse_importance")
#: Data parallelism over several processes: a replica each (DDP), or CPT's model sharded (FSDP).
PARALLEL = ("ddp", "fsdp")


@dataclass(frozen=True)
class RecoveryConfig:
    """Hyper-parameters of recovery training; the defaults follow LLM-Pruner / Shortened-LLaMA.

    LoRA: r=8, alpha=16, dropout 0.05 on all seven projections, lr 1e-4, AdamW without weight decay
    (LLM-Pruner's post-training script runs the Hugging Face Trainer: linear schedule with warm-up,
    gradient clipping at 1.0, sequences cut at 256 tokens). Continued pretraining (CPT): all weights,
    AdamW lr 1e-4, weight decay 0.1, betas (0.9, 0.95) as in Shortened-LLaMA. Warm-up is a fraction
    of the budget so the schedule scales with it (ours: the papers fix a step count for their budget).
    """

    batch_size: int = 8
    micro_batch_size: int | None = None  # None = batch_size (no gradient accumulation)
    seqlen: int = 256
    lr: float = 1e-4
    schedule: str = "linear"
    warmup_ratio: float = 0.05
    max_grad_norm: float = 1.0
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = SEVEN_PROJECTIONS
    lora_weight_decay: float = 0.0
    lora_betas: tuple[float, float] = (0.9, 0.999)
    cpt_weight_decay: float = 0.1
    cpt_betas: tuple[float, float] = (0.9, 0.95)
    save_every: int = 50  # steps between resumable checkpoints
    gradient_checkpointing: bool = False
    val_batches: int = 8  # validation loss on at most val_batches x batch_size sequences
    importance_nsamples: int = 32  # cfsp_lora: calibration sequences for the coarse importance
    cfsp_importance: str = "angular_distance"  # cfsp_lora's layer score: angular_distance | coarse_importance
    max_epochs: float | None = None  # refuse a budget that needs more passes over the data (None: warn only)
    parallel: str = "ddp"  # several processes: ddp (a replica each) | fsdp (CPT's model sharded per layer)

    def __post_init__(self) -> None:
        positive = ("batch_size", "seqlen", "lora_r", "save_every", "importance_nsamples")
        for name in positive:
            if int(getattr(self, name)) <= 0:
                raise PrunebenchError(f"recovery option {name} must be > 0, got {getattr(self, name)}")
        if self.micro_batch_size is not None and (
            self.micro_batch_size <= 0 or self.batch_size % self.micro_batch_size
        ):
            raise PrunebenchError(
                f"micro_batch_size {self.micro_batch_size} must be > 0 and divide batch_size {self.batch_size}"
            )
        if not self.lr > 0:
            raise PrunebenchError(f"learning rate must be > 0, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise PrunebenchError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if not 0 <= self.warmup_ratio < 1:
            raise PrunebenchError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 <= self.lora_dropout < 1:
            raise PrunebenchError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.val_batches < 0:
            raise PrunebenchError(f"val_batches must be >= 0, got {self.val_batches}")
        if self.cfsp_importance not in CFSP_IMPORTANCES:
            raise PrunebenchError(
                f"unknown cfsp_importance {self.cfsp_importance!r}; choose one of {', '.join(CFSP_IMPORTANCES)}"
            )
        if self.parallel not in PARALLEL:
            raise PrunebenchError(
                f"unknown recovery option parallel {self.parallel!r}; choose one of {', '.join(PARALLEL)}"
            )
        if self.max_epochs is not None and not self.max_epochs > 0:
            raise PrunebenchError(f"max_epochs must be > 0, got {self.max_epochs}")
        if not self.target_modules:
            raise PrunebenchError("target_modules is empty: LoRA needs at least one module name")

    @property
    def micro_batch(self) -> int:
        """Sequences per forward pass."""
        return self.micro_batch_size or self.batch_size

    @classmethod
    def from_params(cls, params: dict) -> RecoveryConfig:
        """Build from a plain dict (config file / CLI); unknown keys are errors with close matches."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = [k for k in params if k not in fields]
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(key, fields, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(fields)}"
            raise PrunebenchError(f"unknown recovery option {key!r}{hint}")
        values = {key: _coerce(key, fields[key].type, value) for key, value in params.items()}
        return cls(**values)

    def to_dict(self) -> dict:
        """JSON-serialisable form, for the summary and the checkpoint fingerprint."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _coerce(key: str, annotation: str, value):
    """A value of the field's type (``parse_option``); a string that is not of it is a clear error."""
    try:
        return parse_option(value, annotation)
    except ValueError:
        raise PrunebenchError(f"recovery option {key} expects {annotation}, got {value!r}") from None


@dataclass(frozen=True)
class Budget:
    """A training budget: exactly one of optimizer steps or training tokens, both > 0.

    A token budget becomes ``ceil(tokens / (batch_size * seqlen))`` steps, the capacity of a step, so
    every method and variant trains for the same number of steps on the same data; the log records the
    tokens actually fed (padding excluded, which only differs for instruction data).
    """

    steps: int | None = None
    tokens: int | None = None

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.tokens is None):
            raise PrunebenchError("give exactly one budget: a number of steps or a number of tokens")
        value = self.steps if self.steps is not None else self.tokens
        if value is None or int(value) <= 0:
            kind = "steps" if self.steps is not None else "tokens"
            raise PrunebenchError(f"the budget must be > 0 {kind}, got {value}")

    def to_steps(self, config: RecoveryConfig) -> int:
        """Number of optimizer steps this budget buys."""
        if self.steps is not None:
            return int(self.steps)
        return math.ceil(int(self.tokens) / (config.batch_size * config.seqlen))

    def to_dict(self) -> dict:
        return {"steps": self.steps, "tokens": self.tokens}
