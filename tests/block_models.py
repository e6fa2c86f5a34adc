"""Tiny models for the whole-block rankings: sharp random weights, chosen layers made exactly identity,
and calibration that the dense model itself generated (so any real change to it raises the loss)."""

from __future__ import annotations

import torch
from conftest import make_tiny_model

from prunebench.models import get_adapter


def make_identity(model: torch.nn.Module, layer: int) -> None:
    """Zero the attention output and MLP down projections: the layer adds nothing to the residual."""
    adapter = get_adapter(model)
    with torch.no_grad():
        adapter.attention(layer).o_proj.weight.zero_()
        adapter.mlp(layer).down_proj.weight.zero_()


def sharp_model(identity: tuple[int, ...] = (), layers: int = 8, family: str = "llama3", seed: int = 0):
    """A random model with large weights (std 0.5), so that every non-identity layer matters."""
    model = make_tiny_model(family, seed=seed, num_hidden_layers=layers, initializer_range=0.5)
    for layer in identity:
        make_identity(model, layer)
    return model


def own_text(model: torch.nn.Module, rows: int = 4, length: int = 16, seed: int = 0) -> torch.Tensor:
    """Greedy continuations of random one-token prompts: the dense model's most likely text."""
    prompt = torch.randint(
        3, model.config.vocab_size, (rows, 1), generator=torch.Generator().manual_seed(seed)
    )
    ids = prompt
    with torch.no_grad():
        for _ in range(length - 1):
            next_id = model(ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, next_id], dim=1)
    return ids


def without_layers(model: torch.nn.Module, removed: list[int]) -> torch.nn.Module:
    """The naive reference: a copy of ``model`` whose decoder layers ``removed`` are deleted."""
    import copy

    small = copy.deepcopy(model)
    kept = [layer for i, layer in enumerate(small.model.layers) if i not in removed]
    small.model.layers = torch.nn.ModuleList(kept)
    small.config.num_hidden_layers = len(kept)
    if getattr(small.config, "layer_types", None) is not None:
        small.config.layer_types = [t for i, t in enumerate(small.config.layer_types) if i not in removed]
    return small
