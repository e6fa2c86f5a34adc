"""cfsp_lora: LoRA whose per-layer rank follows CFSP's coarse-grained layer importance.

**Our reading of the CFSP abstract** ("adaptively allocates training overhead based on coarse-grained
importance"); the paper's recovery formula is not public and the official repository has no
fine-tuning code. We give layer l the rank ``R_l = R * s_l / mean(s)`` (rounded by largest remainders,
at least 1, so the ranks sum to exactly ``L * R``, the total of uniform LoRA with rank R).

Which layer score ``s_l`` (option ``cfsp_importance``):

- ``angular_distance`` (default): CFSP's coarse block score ``I_l``, the angular distance between the
  block's input and output hidden states summed over calibration tokens (CFSP's ``angular`` global
  metric, §1.4 of the width notes). Our choice: it carries the layer differences.
- ``coarse_importance``: CFSP's allocation score ``sigmoid(a (I_l - mean I) / 1e4)`` (a = 1, §1.5),
  literally the ``s_l`` of the notes. With its absolute 1e4 constant it is flat unless the calibration
  set is large (then ``s_l / mean(s)`` is within a few percent of 1 and the ranks equal uniform LoRA's).

The score comes from CFSP's scores (keys ``angular_distance`` / ``coarse_importance``, one value per
dense layer, mapped through the pruning plan's kept layers) when the model was pruned by CFSP, and is
otherwise measured on the pruned model itself by :func:`angular_importance`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

import torch
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.recovery.lora import decoder_layers


@torch.no_grad()
def angular_importance(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> torch.Tensor:
    """Per decoder layer: sum over (unpadded) tokens of arccos(cos(h_in, h_out)) / pi, in fp32.

    As CFSP's code: a NaN cosine (zero vector) counts as 0.5. Unlike it, the cosine is clamped to
    [-1, 1] before arccos (a rounding above 1 would give NaN) and computed row-wise, not via a Gram
    matrix (same values, linear memory).
    """
    layers = decoder_layers(model)
    totals = torch.zeros(len(layers), dtype=torch.float64)
    state: dict[str, torch.Tensor] = {}

    def hook(index: int):
        def capture(_module, args, kwargs, output):
            h_in = (args[0] if args else kwargs["hidden_states"]).float()
            h_out = (output[0] if isinstance(output, tuple) else output).float()
            cos = nn.functional.cosine_similarity(h_in, h_out, dim=-1, eps=0.0)
            cos = torch.nan_to_num(cos, nan=0.5).clamp(-1.0, 1.0)
            angle = torch.arccos(cos) / math.pi
            totals[index] += (angle * state["mask"]).sum().double().cpu()

        return capture

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for batch in batches:
            state["mask"] = batch["attention_mask"].to(device).float()
            model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return totals.float()


def allocate_ranks(importance: torch.Tensor, base_rank: int) -> list[int]:
    """Ranks proportional to ``importance / mean(importance)`` summing to ``len * base_rank``.

    Largest-remainder rounding (ties to the lower layer index), every layer at least rank 1.
    """
    s = importance.double()
    if s.numel() == 0 or not torch.isfinite(s).all() or (s < 0).any():
        raise PrunebenchError(f"layer importances must be finite and >= 0, got {importance.tolist()}")
    total = base_rank * s.numel()
    share = s / s.mean() * base_rank if s.sum() > 0 else torch.full_like(s, float(base_rank))
    ranks = share.floor().clamp(min=1).long()
    while ranks.sum() < total:
        ranks[int(torch.argmax(share - ranks))] += 1
    while ranks.sum() > total:
        slack = torch.where(ranks > 1, share - ranks, torch.full_like(share, math.inf))
        ranks[int(torch.argmin(slack))] -= 1
    return [int(r) for r in ranks]


def kept_dense_layers(plan, dense_layers: int) -> list[int]:
    """Dense indices of the layers a plan keeps, in order (= the pruned model's layers)."""
    return [i for i in range(dense_layers) if not (i in plan.layers and plan.layers[i].removes_layer)]


def importance_from_scores(scores_dir: str, model_dir: str, num_layers: int, key: str) -> torch.Tensor:
    """CFSP's layer score ``key`` for each layer of the pruned model, read from a scores directory."""
    from prunebench.methods import Scores
    from prunebench.models.integrity import check_same_model
    from prunebench.plan import PruningPlan

    scores = Scores.load(scores_dir)
    if key not in scores.tensors:
        raise PrunebenchError(
            f"scores in {scores_dir!r} have no {key!r} (not CFSP scores?); keys: {', '.join(sorted(scores.tensors))}"
        )
    dense = scores.tensors[key].flatten().float()
    plan_path = os.path.join(model_dir, "plan.json")
    plan = PruningPlan.load(plan_path) if os.path.exists(plan_path) else None
    if plan is not None:
        check_same_model(
            scores.meta.get("base_shapes"),
            scores.meta.get("base_fingerprint"),
            plan.base_shapes,
            plan.base_fingerprint,
            f"CFSP scores in {scores_dir!r} (for the model that {model_dir!r} was pruned from)",
        )
    kept = kept_dense_layers(plan, dense.numel()) if plan is not None else list(range(dense.numel()))
    if len(kept) != num_layers:
        raise PrunebenchError(
            f"CFSP scores cover {dense.numel()} dense layers, {len(kept)} kept by the plan, "
            f"but the model has {num_layers} layers: scores and model do not match"
        )
    return dense[kept]


def sigmoid_importance(angular: torch.Tensor) -> torch.Tensor:
    """CFSP's allocation score from angular distances (its own function, default temperature a = 1)."""
    from prunebench.methods.cfsp import CfspConfig, coarse_importance

    return torch.tensor(coarse_importance(angular.tolist(), CfspConfig.a))
