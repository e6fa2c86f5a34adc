"""Physical surgery: apply a pruning plan so the model really shrinks (and a masked twin for tests)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from prunebench.models.adapter import ModelAdapter, get_adapter
from prunebench.models.modeling_prunebench import LAYER_SPEC_KEY, make_skippable, renumber_attention
from prunebench.plan import LayerPlan, PruningPlan


def _rows(index: list[int], block: int) -> torch.Tensor:
    """Row indices of whole blocks (heads) of ``block`` rows each."""
    return torch.tensor([b * block + j for b in index for j in range(block)], dtype=torch.long)


def _sliced_linear(old: nn.Linear, rows: torch.Tensor | None, cols: torch.Tensor | None) -> nn.Linear:
    """A new Linear holding the selected output rows / input columns of ``old``."""
    weight = old.weight.data
    if rows is not None:
        weight = weight.index_select(0, rows.to(weight.device))
    if cols is not None:
        weight = weight.index_select(1, cols.to(weight.device))
    new = nn.Linear(
        weight.shape[1], weight.shape[0], bias=old.bias is not None, device=weight.device, dtype=weight.dtype
    )
    new.weight.data.copy_(weight)
    if old.bias is not None:
        bias = old.bias.data if rows is None else old.bias.data.index_select(0, rows.to(weight.device))
        new.bias.data.copy_(bias)
    return new


def _with_added_bias(old: nn.Linear, extra: torch.Tensor) -> nn.Linear:
    """``old`` with ``extra`` added to its bias (creating the bias if it had none)."""
    new = nn.Linear(
        old.in_features, old.out_features, bias=True, device=old.weight.device, dtype=old.weight.dtype
    )
    new.weight.data.copy_(old.weight.data)
    base = old.bias.data if old.bias is not None else torch.zeros_like(new.bias.data)
    new.bias.data.copy_(base + extra.to(base.device, base.dtype))
    return new


def _slice_attention(adapter: ModelAdapter, layer: int, kv_heads: list[int]) -> None:
    attn = adapter.attention(layer)
    hd, g = adapter.head_dim, adapter.group_size
    kv_rows = _rows(kv_heads, hd)
    q_rows = _rows([h * g + j for h in kv_heads for j in range(g)], hd)
    attn.q_proj = _sliced_linear(attn.q_proj, q_rows, None)
    attn.k_proj = _sliced_linear(attn.k_proj, kv_rows, None)
    attn.v_proj = _sliced_linear(attn.v_proj, kv_rows, None)
    attn.o_proj = _sliced_linear(attn.o_proj, None, q_rows)


def _slice_mlp(adapter: ModelAdapter, layer: int, channels: list[int]) -> None:
    mlp = adapter.mlp(layer)
    idx = torch.tensor(channels, dtype=torch.long)
    mlp.gate_proj = _sliced_linear(mlp.gate_proj, idx, None)
    mlp.up_proj = _sliced_linear(mlp.up_proj, idx, None)
    mlp.down_proj = _sliced_linear(mlp.down_proj, None, idx)
    mlp.intermediate_size = len(channels)


def _apply_layer(adapter: ModelAdapter, layer: int, lp: LayerPlan) -> None:
    module = adapter.layers[layer]
    make_skippable(module)
    if lp.removes_attention:
        module.self_attn = None
        module.input_layernorm = None
    elif lp.kv_heads is not None:
        _slice_attention(adapter, layer, lp.kv_heads)
    if lp.removes_mlp:
        module.mlp = None
        module.post_attention_layernorm = None
    elif lp.mlp_channels is not None:
        _slice_mlp(adapter, layer, lp.mlp_channels)


def _constant(vector: torch.Tensor, like: torch.Tensor) -> nn.Parameter:
    """``vector`` as a parameter on ``like``'s device and dtype (a layer that lost both sublayers has
    no parameter of its own to take them from)."""
    return nn.Parameter(vector.detach().to(like.device, like.dtype).clone())


def _add_compensation(adapter: ModelAdapter, compensation: dict[int, dict[str, torch.Tensor]]) -> None:
    """Add compensation vectors as biases; a removed sublayer keeps just its constant bias."""
    for layer, parts in compensation.items():
        module = adapter.layers[layer]
        make_skippable(module)
        attn, mlp = adapter.attention(layer), adapter.mlp(layer)
        if "o_proj" in parts:
            if attn is not None:
                attn.o_proj = _with_added_bias(attn.o_proj, parts["o_proj"])
            else:
                module.removed_attn_bias = _constant(parts["o_proj"], adapter.embed_tokens.weight)
        if "down_proj" in parts:
            if mlp is not None:
                mlp.down_proj = _with_added_bias(mlp.down_proj, parts["down_proj"])
            else:
                module.removed_mlp_bias = _constant(parts["down_proj"], adapter.embed_tokens.weight)


def layer_specs(adapter: ModelAdapter) -> list[dict[str, Any]]:
    """The per-layer shapes that ``config.prunebench_layers`` records for a model."""
    specs = []
    for i in range(adapter.num_layers):
        attn, mlp, module = adapter.attention(i), adapter.mlp(i), adapter.layers[i]
        if attn is not None:
            o_bias = attn.o_proj.bias is not None
        else:
            o_bias = getattr(module, "removed_attn_bias", None) is not None
        if mlp is not None:
            down_bias = mlp.down_proj.bias is not None
        else:
            down_bias = getattr(module, "removed_mlp_bias", None) is not None
        specs.append(
            {
                "kv_heads": adapter.kv_heads(i),
                "intermediate_size": adapter.mlp_channels(i),
                "o_proj_bias": o_bias,
                "down_proj_bias": down_bias,
            }
        )
    return specs


def _is_regular(adapter: ModelAdapter, specs: list[dict[str, Any]]) -> bool:
    """True when every layer has the dense shapes and biases, i.e. a plain HF config describes it."""
    config = adapter.config
    dense_o_bias = bool(getattr(config, "attention_bias", False))
    dense_down_bias = bool(getattr(config, "mlp_bias", False))
    return all(
        s["kv_heads"] == adapter.num_kv_heads
        and s["intermediate_size"] == adapter.intermediate_size
        and s["o_proj_bias"] == dense_o_bias
        and s["down_proj_bias"] == dense_down_bias
        for s in specs
    )


def _delete_layers(adapter: ModelAdapter, deleted: set[int]) -> None:
    config = adapter.config
    kept = [i for i in range(adapter.num_layers) if i not in deleted]
    adapter.model.model.layers = nn.ModuleList([adapter.layers[i] for i in kept])
    config.num_hidden_layers = len(kept)
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = [config.layer_types[i] for i in kept]


def sync_config(model: nn.Module) -> None:
    """Record the model's current per-layer shapes in its config (or drop them if it is regular)."""
    adapter = get_adapter(model)
    specs = layer_specs(adapter)
    config = adapter.config
    if _is_regular(adapter, specs):
        if hasattr(config, LAYER_SPEC_KEY):
            delattr(config, LAYER_SPEC_KEY)
    else:
        setattr(config, LAYER_SPEC_KEY, specs)
    renumber_attention(adapter.layers)


def apply_plan(model: nn.Module, plan: PruningPlan) -> nn.Module:
    """Physically prune ``model`` in place according to ``plan`` and return it.

    Heads go by whole KV groups (a KV head and its query heads), so ``num_key_value_groups`` stays
    valid; channels are rows of gate/up and columns of down; an empty list removes the sublayer
    with its RMSNorm; a layer with both removed is deleted. Compensation vectors become biases of
    ``o_proj``/``down_proj`` (of a removed sublayer, only that constant stays, and its layer stays). Attention modules are renumbered so that each owns one KV-cache slot.
    """
    adapter = get_adapter(model)
    plan.validate(adapter)
    with torch.no_grad():
        for layer in sorted(plan.layers):
            _apply_layer(adapter, layer, plan.layers[layer])
        _add_compensation(adapter, plan.compensation or {})
        compensated = set(plan.compensation or {})
        _delete_layers(
            adapter, {i for i, lp in plan.layers.items() if lp.removes_layer and i not in compensated}
        )
    sync_config(model)
    return model


def mask_plan(model: nn.Module, plan: PruningPlan) -> nn.Module:
    """A deep copy of ``model`` with the plan's structures zeroed instead of removed.

    Zeroing the ``o_proj`` columns of removed heads and the ``down_proj`` columns of removed
    channels removes exactly their contribution to the residual stream, so the masked model is the
    reference that a physically pruned model must reproduce.
    """
    masked = copy.deepcopy(model)
    adapter = get_adapter(masked)
    plan.validate(adapter)
    hd, g = adapter.head_dim, adapter.group_size
    with torch.no_grad():
        for layer, lp in plan.layers.items():
            attn, mlp = adapter.attention(layer), adapter.mlp(layer)
            if lp.kv_heads is not None:
                kept = set(_rows([h * g + j for h in lp.kv_heads for j in range(g)], hd).tolist())
                cols = [c for c in range(attn.o_proj.in_features) if c not in kept]
                attn.o_proj.weight[:, cols] = 0
                if lp.removes_attention and attn.o_proj.bias is not None:
                    attn.o_proj.bias.zero_()
            if lp.mlp_channels is not None:
                kept = set(lp.mlp_channels)
                cols = [c for c in range(mlp.down_proj.in_features) if c not in kept]
                mlp.down_proj.weight[:, cols] = 0
                if lp.removes_mlp and mlp.down_proj.bias is not None:
                    mlp.down_proj.bias.zero_()
        for layer, parts in (plan.compensation or {}).items():
            attn, mlp = adapter.attention(layer), adapter.mlp(layer)
            if "o_proj" in parts:
                attn.o_proj = _with_added_bias(attn.o_proj, parts["o_proj"])
            if "down_proj" in parts:
                mlp.down_proj = _with_added_bias(mlp.down_proj, parts["down_proj"])
    return masked
