"""Modelling code for physically pruned Llama-style decoders (shipped inside pruned checkpoints).

A pruned model keeps its family's modules (Llama, Mistral, Qwen2) but every decoder layer may have
its own number of KV groups and MLP channels, may have lost its attention or MLP sublayer (the
sublayer's RMSNorm goes with it), and may carry bias vectors on ``o_proj``/``down_proj`` (FLAP's
bias compensation). A removed sublayer that FLAP compensated leaves only its bias, a constant
added to the residual stream (``removed_attn_bias`` / ``removed_mlp_bias``). The per-layer shapes
live in ``config.prunebench_layers``.

This file is self-contained on purpose: ``save_pretrained`` copies it next to the weights, so
``AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`` (the lm-eval CLI, for one)
rebuilds the same shapes without prunebench installed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM

LAYER_SPEC_KEY = "prunebench_layers"


class SkippableDecoderLayerMixin:
    """Decoder-layer forward that skips a removed sublayer; the residual stream passes unchanged.

    The KV cache reaches the attention through ``**kwargs`` under whichever name the family's model passes
    (``cache`` in transformers 5.24, ``past_key_values`` before), so no deprecated name is added.
    """

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        use_cache: bool | None = False,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if self.self_attn is not None:
            residual = hidden_states
            attn_out, _ = self.self_attn(
                hidden_states=self.input_layernorm(hidden_states),
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=use_cache,
                position_embeddings=position_embeddings,
                **kwargs,
            )
            hidden_states = residual + attn_out
        elif getattr(self, "removed_attn_bias", None) is not None:
            hidden_states = hidden_states + self.removed_attn_bias
        if self.mlp is not None:
            hidden_states = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
        elif getattr(self, "removed_mlp_bias", None) is not None:
            hidden_states = hidden_states + self.removed_mlp_bias
        return hidden_states


_SKIPPABLE_CLASSES: dict[type, type] = {}


def make_skippable(layer: nn.Module) -> None:
    """Give ``layer`` the skipping forward by switching it to a subclass of its own class."""
    cls = type(layer)
    if issubclass(cls, SkippableDecoderLayerMixin):
        return
    if cls not in _SKIPPABLE_CLASSES:
        _SKIPPABLE_CLASSES[cls] = type(f"Pruned{cls.__name__}", (SkippableDecoderLayerMixin, cls), {})
    layer.__class__ = _SKIPPABLE_CLASSES[cls]


def _linear_like(old: nn.Linear, in_features: int, out_features: int, bias: bool) -> nn.Linear:
    return nn.Linear(in_features, out_features, bias=bias, device=old.weight.device, dtype=old.weight.dtype)


def _remove_sublayer(
    layer: nn.Module, name: str, norm: str, out_proj: str, bias_name: str, spec: dict
) -> None:
    """Drop a sublayer and its RMSNorm; keep an (uninitialised) constant bias if the spec records one."""
    weight = getattr(getattr(layer, name), out_proj).weight
    setattr(layer, name, None)
    setattr(layer, norm, None)
    if spec.get(f"{out_proj}_bias", False):
        setattr(
            layer,
            bias_name,
            nn.Parameter(torch.zeros(weight.shape[0], device=weight.device, dtype=weight.dtype)),
        )


def reshape_layer(layer: nn.Module, spec: dict[str, Any], head_dim: int, group_size: int) -> None:
    """Give one decoder layer the shapes in ``spec`` (fresh, uninitialised weights of the right size).

    ``spec`` keys: ``kv_heads`` (0 = attention removed), ``intermediate_size`` (0 = MLP removed),
    ``o_proj_bias`` and ``down_proj_bias`` (a bias vector is present; for a removed sublayer, the
    constant it leaves behind).
    """
    make_skippable(layer)
    kv_heads, channels = int(spec["kv_heads"]), int(spec["intermediate_size"])
    if kv_heads == 0:
        _remove_sublayer(layer, "self_attn", "input_layernorm", "o_proj", "removed_attn_bias", spec)
    else:
        attn = layer.self_attn
        q_out, kv_out = kv_heads * group_size * head_dim, kv_heads * head_dim
        hidden = attn.q_proj.in_features
        attn.q_proj = _linear_like(attn.q_proj, hidden, q_out, attn.q_proj.bias is not None)
        attn.k_proj = _linear_like(attn.k_proj, hidden, kv_out, attn.k_proj.bias is not None)
        attn.v_proj = _linear_like(attn.v_proj, hidden, kv_out, attn.v_proj.bias is not None)
        attn.o_proj = _linear_like(attn.o_proj, q_out, hidden, bool(spec.get("o_proj_bias", False)))
    if channels == 0:
        _remove_sublayer(layer, "mlp", "post_attention_layernorm", "down_proj", "removed_mlp_bias", spec)
    else:
        mlp = layer.mlp
        hidden = mlp.gate_proj.in_features
        mlp.gate_proj = _linear_like(mlp.gate_proj, hidden, channels, mlp.gate_proj.bias is not None)
        mlp.up_proj = _linear_like(mlp.up_proj, hidden, channels, mlp.up_proj.bias is not None)
        mlp.down_proj = _linear_like(mlp.down_proj, channels, hidden, bool(spec.get("down_proj_bias", False)))
        mlp.intermediate_size = channels


def renumber_attention(layers: nn.ModuleList) -> None:
    """Number the remaining attention modules 0..n-1 so each owns one KV-cache slot."""
    slot = 0
    for layer in layers:
        if getattr(layer, "self_attn", None) is not None:
            layer.self_attn.layer_idx = slot
            slot += 1


def reshape_to_spec(model: nn.Module, specs: list[dict[str, Any]]) -> None:
    """Apply the per-layer shapes of ``config.prunebench_layers`` to a freshly built model."""
    config = model.config
    layers = model.model.layers
    if len(specs) != len(layers):
        raise ValueError(f"{LAYER_SPEC_KEY} has {len(specs)} entries but the config has {len(layers)} layers")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    group_size = config.num_attention_heads // config.num_key_value_heads
    for layer, spec in zip(layers, specs, strict=True):
        reshape_layer(layer, spec, head_dim, group_size)
    renumber_attention(layers)


class PrunebenchLlamaForCausalLM(LlamaForCausalLM):
    """A Llama (1/2/3) decoder with per-layer pruned shapes."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        reshape_to_spec(self, getattr(config, LAYER_SPEC_KEY))


class PrunebenchMistralForCausalLM(MistralForCausalLM):
    """A Mistral decoder with per-layer pruned shapes."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        reshape_to_spec(self, getattr(config, LAYER_SPEC_KEY))


class PrunebenchQwen2ForCausalLM(Qwen2ForCausalLM):
    """A Qwen2/Qwen2.5 decoder with per-layer pruned shapes."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        reshape_to_spec(self, getattr(config, LAYER_SPEC_KEY))


PRUNED_CLASSES: dict[str, type] = {
    "llama": PrunebenchLlamaForCausalLM,
    "mistral": PrunebenchMistralForCausalLM,
    "qwen2": PrunebenchQwen2ForCausalLM,
}
