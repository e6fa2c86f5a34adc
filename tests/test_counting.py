"""Parameter counts and FLOPs."""

from __future__ import annotations

from conftest import make_tiny_model

from prunebench.models import get_adapter
from prunebench.models.counting import (
    decoder_params,
    flops_per_token,
    kv_group_params,
    mlp_channel_params,
    part_params,
    sublayer_params,
    total_params,
)


def test_tied_embeddings_counted_once():
    tied, untied = make_tiny_model("llama3"), make_tiny_model("llama3", tie_word_embeddings=False)
    assert total_params(untied) - total_params(tied) == 96 * 32
    assert decoder_params(tied) == decoder_params(untied)


def test_counts_by_hand():
    model = make_tiny_model("qwen2")  # hidden 32, 4 heads of 8, 2 KV heads, 48 channels, q/k/v biases
    adapter = get_adapter(model)
    attn = 32 * 32 + 32 + 2 * (32 * 16 + 16) + 32 * 32 + 32  # q, k, v (with biases), o; + RMSNorm
    mlp = 3 * 32 * 48 + 32
    assert sublayer_params(adapter, 0, "attn") == attn
    assert sublayer_params(adapter, 0, "mlp") == mlp
    assert decoder_params(model) == 4 * (attn + mlp)
    assert kv_group_params(adapter, 0) == (16 * 32 + 16) + 2 * (8 * 32 + 8) + 32 * 16
    assert mlp_channel_params(adapter, 0) == 96


def test_flops_grow_with_context_and_shrink_with_pruning():
    model = make_tiny_model("llama3")
    linear = sum(m.weight.numel() for m in model.modules() if m.__class__.__name__ == "Linear")
    assert flops_per_token(model, 0) == 2 * linear
    assert flops_per_token(model, 10) == 2 * linear + 4 * 10 * 8 * 4 * 4


def test_part_params_split_the_decoder_into_attention_and_mlp():
    model = make_tiny_model("qwen2")
    assert part_params(model, "attn") + part_params(model, "mlp") == decoder_params(model)
    assert part_params(model, "attn") == 4 * sublayer_params(get_adapter(model), 0, "attn")
