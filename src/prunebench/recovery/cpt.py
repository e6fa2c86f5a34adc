"""Continued pretraining (CPT): every weight trainable, Shortened-LLaMA's AdamW settings.

Shortened-LLaMA recovers aggressively pruned models by continued pretraining of all weights with
AdamW (lr 1e-4, weight decay 0.1, betas 0.9/0.95). We apply the weight decay to matrices only (norm
weights and biases excluded, as the Hugging Face Trainer's parameter groups do); the warm-up and the
schedule are scaled to the budget by :class:`~prunebench.recovery.config.RecoveryConfig`.
"""

from __future__ import annotations

from torch import nn

from prunebench.recovery.config import RecoveryConfig


def prepare_full_training(model: nn.Module) -> nn.Module:
    """Make every parameter trainable (CPT updates the whole pruned model)."""
    for param in model.parameters():
        param.requires_grad_(True)
    return model


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on matrices (linear and embedding weights), none on norms and biases."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def optimizer_settings(config: RecoveryConfig, phase: str) -> tuple[float, tuple[float, float]]:
    """(weight decay, betas) of a phase: CPT's settings, or LoRA's (LLM-Pruner: HF Trainer defaults)."""
    if phase == "cpt":
        return config.cpt_weight_decay, tuple(config.cpt_betas)
    return config.lora_weight_decay, tuple(config.lora_betas)
