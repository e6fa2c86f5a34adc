"""Parameter and FLOP counts, and the sparsity ratios the study reports."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from prunebench.models.adapter import ModelAdapter, get_adapter

if TYPE_CHECKING:
    from prunebench.plan import PruningPlan


def decoder_params(model: nn.Module) -> int:
    """Parameters inside the decoder layers (norms and any compensation biases included)."""
    return sum(p.numel() for p in get_adapter(model).layers.parameters())


def total_params(model: nn.Module) -> int:
    """All parameters, tied embeddings counted once (``parameters()`` yields a shared tensor once)."""
    return sum(p.numel() for p in model.parameters())


def achieved_ratios(pruned: nn.Module, base: nn.Module) -> dict[str, float]:
    """Fractions of decoder-layer and of total parameters that ``pruned`` removed from ``base``."""
    return {
        "decoder_ratio": 1 - decoder_params(pruned) / decoder_params(base),
        "total_ratio": 1 - total_params(pruned) / total_params(base),
    }


def kv_group_params(adapter: ModelAdapter, layer: int) -> int:
    """Parameters removed by dropping one KV group: its q/k/v rows (and biases) and o_proj columns."""
    attn = adapter.attention(layer)
    q_rows = adapter.group_size * adapter.head_dim
    kv_rows = adapter.head_dim
    h = adapter.hidden_size
    weights = q_rows * h + 2 * kv_rows * h + h * q_rows
    biases = (q_rows + 2 * kv_rows) if attn is not None and attn.q_proj.bias is not None else 0
    return weights + biases


def mlp_channel_params(adapter: ModelAdapter, layer: int) -> int:
    """Parameters removed by dropping one intermediate channel (a gate row, an up row, a down column)."""
    mlp = adapter.mlp(layer)
    biases = 2 if mlp is not None and mlp.gate_proj.bias is not None else 0
    return 3 * adapter.hidden_size + biases


def sublayer_params(adapter: ModelAdapter, layer: int, part: str) -> int:
    """All parameters of layer ``layer``'s attention (``"attn"``) or MLP (``"mlp"``), its RMSNorm included."""
    if part == "attn":
        module, norm = adapter.attention(layer), adapter.input_norm(layer)
    elif part == "mlp":
        module, norm = adapter.mlp(layer), adapter.post_attention_norm(layer)
    else:
        raise ValueError(f"part must be 'attn' or 'mlp', got {part!r}")
    modules = [m for m in (module, norm) if m is not None]
    return sum(p.numel() for m in modules for p in m.parameters())


def part_params(model: nn.Module, part: str) -> int:
    """Parameters of every layer's attention (``"attn"``) or MLP (``"mlp"``) sublayer, RMSNorms included.

    A compensation bias on a kept ``o_proj``/``down_proj`` counts; the constant left by a removed
    sublayer does not (it is no longer attention or MLP).
    """
    adapter = get_adapter(model)
    return sum(sublayer_params(adapter, i, part) for i in range(adapter.num_layers))


def plan_decoder_ratio(adapter: ModelAdapter, plan: PruningPlan) -> float:
    """The decoder ratio ``plan`` would achieve on the dense model behind ``adapter``, without surgery.

    Compensation biases add ``hidden_size`` parameters each, as they do after surgery.
    """
    removed = 0
    for layer, lp in plan.layers.items():
        if lp.removes_attention:
            removed += sublayer_params(adapter, layer, "attn")
        elif lp.kv_heads is not None:
            removed += (adapter.kv_heads(layer) - len(lp.kv_heads)) * kv_group_params(adapter, layer)
        if lp.removes_mlp:
            removed += sublayer_params(adapter, layer, "mlp")
        elif lp.mlp_channels is not None:
            removed += (adapter.mlp_channels(layer) - len(lp.mlp_channels)) * mlp_channel_params(
                adapter, layer
            )
    for layer, parts in (plan.compensation or {}).items():
        for name in parts:
            module = adapter.attention(layer) if name == "o_proj" else adapter.mlp(layer)
            proj = getattr(module, name)
            if proj.bias is None:
                removed -= adapter.hidden_size
    return removed / decoder_params(adapter.model)


def flops_per_token(model: nn.Module, context_len: int) -> float:
    """Forward FLOPs per token: 2 per weight of every linear layer (LM head included) plus attention.

    Attention scores and the weighted sum cost ``4 * context_len * head_dim`` per query head; norms,
    activations and softmax are ignored (a few per cent at most).
    """
    adapter = get_adapter(model)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    attention = 0
    for i in range(adapter.num_layers):
        q_heads = adapter.kv_heads(i) * adapter.group_size
        attention += 4 * context_len * adapter.head_dim * q_heads
    return float(2 * linear + attention)
