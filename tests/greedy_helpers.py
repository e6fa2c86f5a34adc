"""Helpers for the greedy-search tests: tiny models with sublayers made exactly identity, self-generated data."""

from __future__ import annotations

import torch
from conftest import make_tiny_model

from prunebench.models import apply_plan, get_adapter, mask_plan
from prunebench.plan import PruningPlan


def model_with_identity(
    layers: int = 4, attn: tuple[int, ...] = (), mlp: tuple[int, ...] = ()
) -> torch.nn.Module:
    """A tiny Llama (GQA) with strong random weights whose listed sublayers add exactly zero.

    Zeroing a sublayer's output projection makes it contribute nothing to the residual stream, so
    removing it changes no logit: it must be the first removal of every criterion.
    """
    model = make_tiny_model("llama3", num_hidden_layers=layers, initializer_range=0.3)
    adapter = get_adapter(model)
    with torch.no_grad():
        for i in attn:
            adapter.attention(i).o_proj.weight.zero_()
        for i in mlp:
            adapter.mlp(i).down_proj.weight.zero_()
    return model


@torch.no_grad()
def own_samples(model: torch.nn.Module, rows: int = 8, length: int = 24, seed: int = 0) -> torch.Tensor:
    """Text sampled from the model itself: in expectation no other model fits it better (Gibbs), so a
    perplexity criterion sees every real removal as harmful."""
    torch.manual_seed(seed)
    prompt = torch.randint(3, 96, (rows, 1), generator=torch.Generator().manual_seed(seed))
    return model.generate(
        prompt, max_new_tokens=length - 1, min_new_tokens=length - 1, do_sample=True, top_k=0, pad_token_id=0
    )


def check_physical(model: torch.nn.Module, plan: PruningPlan, ids: torch.Tensor) -> torch.nn.Module:
    """Applies the plan; asserts the pruned logits equal the masked model's and that generate() works."""
    masked = mask_plan(model, plan)
    expected = masked(ids).logits
    before = get_adapter(model).num_layers
    pruned = apply_plan(model, plan)
    assert (pruned(ids).logits - expected).abs().max().item() <= 1e-5
    # Removed sublayers are really gone (no parameters, no KV-cache slot for a removed attention).
    adapter = get_adapter(pruned)
    gone = plan.removed_sublayers()
    attns = [adapter.attention(i) for i in range(adapter.num_layers) if adapter.attention(i) is not None]
    mlps = [i for i in range(adapter.num_layers) if adapter.mlp(i) is not None]
    assert len(attns) == before - sum(part == "attn" for _, part in gone)
    assert len(mlps) == before - sum(part == "mlp" for _, part in gone)
    assert [a.layer_idx for a in attns] == list(range(len(attns)))
    kwargs = {"max_new_tokens": 5, "min_new_tokens": 5, "do_sample": False, "pad_token_id": 0}
    out = pruned.generate(ids[:1, :6], **kwargs)
    assert out.shape == (1, 11)
    assert torch.equal(out, masked.generate(ids[:1, :6], **kwargs))
    return pruned
