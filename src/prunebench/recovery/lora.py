"""LoRA on a (pruned) model with peft: find the targets that exist, attach, merge.

Defaults follow LLM-Pruner's post-training (and Shortened-LLaMA, which reuses it): r=8, alpha=16,
dropout 0.05, all seven projections. A pruned model may lack a sublayer (attention or MLP removed):
its projections simply do not exist, so that layer gets no LoRA there. A target name that matches no
module anywhere is an error, raised before any training.
"""

from __future__ import annotations

import re
import warnings

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.recovery.config import RecoveryConfig


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a supported causal LM (through the core family adapter)."""
    from prunebench.models import get_adapter

    return get_adapter(model).layers


def lora_targets(model: nn.Module, target_modules: tuple[str, ...]) -> dict[str, int]:
    """Full names of the decoder ``nn.Linear`` modules named like a target -> their layer index.

    Raises PrunebenchError naming the targets that exist in no layer (e.g. a typo, or ``q_proj`` in a
    model whose every attention was removed).
    """
    found: dict[str, int] = {}
    names = {id(module): name for name, module in model.named_modules()}
    for index, layer in enumerate(decoder_layers(model)):
        prefix = names[id(layer)]
        for sub, module in layer.named_modules():
            leaf = sub.rsplit(".", 1)[-1]
            if leaf in target_modules and isinstance(module, nn.Linear) and module.weight.numel() > 0:
                found[f"{prefix}.{sub}"] = index
    present = {name.rsplit(".", 1)[-1] for name in found}
    missing = [t for t in target_modules if t not in present]
    if missing:
        raise PrunebenchError(
            f"LoRA target module(s) {', '.join(missing)} exist in no decoder layer of the model "
            f"(linear layers there: {', '.join(sorted(_linear_leaves(model))) or 'none'})"
        )
    return found


def _linear_leaves(model: nn.Module) -> set[str]:
    return {
        sub.rsplit(".", 1)[-1]
        for layer in decoder_layers(model)
        for sub, module in layer.named_modules()
        if isinstance(module, nn.Linear)
    }


def attach_lora(model: nn.Module, config: RecoveryConfig, layer_ranks: list[int] | None = None) -> PeftModel:
    """Wrap ``model`` with LoRA adapters on every existing target (base weights frozen).

    ``layer_ranks`` (cfsp_lora) gives layer l rank ``layer_ranks[l]`` through peft's ``rank_pattern``
    and alpha ``lora_alpha * rank / lora_r`` through ``alpha_pattern``, so every layer keeps the
    uniform LoRA's scale alpha/r (our choice: only the capacity changes, not the step size).
    """
    targets = lora_targets(model, config.target_modules)
    rank_pattern, alpha_pattern = {}, {}
    if layer_ranks is not None:
        if len(layer_ranks) != len(decoder_layers(model)):
            raise PrunebenchError(
                f"{len(layer_ranks)} LoRA ranks given for a model with {len(decoder_layers(model))} layers"
            )
        for name, index in targets.items():
            rank_pattern[re.escape(name)] = int(layer_ranks[index])
            alpha_pattern[re.escape(name)] = config.lora_alpha * layer_ranks[index] / config.lora_r
    peft_config = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=sorted(targets),
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        bias="none",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        # peft (0.21) reads PreTrainedModel.is_gradient_checkpointing, which transformers 5 deprecated:
        # one FutureWarning per model from their code, not ours.
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        return get_peft_model(model, peft_config)


def merge_lora(model: PeftModel) -> nn.Module:
    """Fold the adapters into the base weights and return the plain (pruned-shape) model."""
    return model.merge_and_unload()
