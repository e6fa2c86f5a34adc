"""Recovery after pruning: LoRA, continued pretraining, CFSP-weighted LoRA, CPT then LoRA."""

from prunebench.recovery.config import Budget, RecoveryConfig
from prunebench.recovery.run import recover
from prunebench.recovery.variants import available_variants, get_variant

__all__ = ["Budget", "RecoveryConfig", "available_variants", "get_variant", "recover"]
