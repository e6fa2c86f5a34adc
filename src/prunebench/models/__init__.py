"""Model families, physical surgery, pruned checkpoints and parameter counts."""

from prunebench.models.adapter import SUPPORTED_FAMILIES, ModelAdapter, get_adapter
from prunebench.models.checkpoint import load_pretrained, save_pretrained
from prunebench.models.surgery import apply_plan, mask_plan

__all__ = [
    "SUPPORTED_FAMILIES",
    "ModelAdapter",
    "apply_plan",
    "get_adapter",
    "load_pretrained",
    "mask_plan",
    "save_pretrained",
]
