"""Physical surgery reproduces the masked model exactly, for every family."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model
from peft import LoraConfig, get_peft_model

from prunebench.errors import PrunebenchError
from prunebench.models import apply_plan, get_adapter, mask_plan
from prunebench.models.counting import achieved_ratios, plan_decoder_ratio
from prunebench.plan import LayerPlan, PruningPlan


def _plan(adapter, with_compensation: bool = False) -> PruningPlan:
    """Partial heads and channels, a layer without attention, a layer without MLP, a deleted layer."""
    layers = {
        0: LayerPlan(kv_heads=[adapter.num_kv_heads - 1], mlp_channels=[0, 5, 7, 30]),
        1: LayerPlan(kv_heads=[]),
        2: LayerPlan(mlp_channels=[]),
        3: LayerPlan(kv_heads=[], mlp_channels=[]),
    }
    compensation = None
    if with_compensation:
        gen = torch.Generator().manual_seed(1)
        h = adapter.hidden_size
        compensation = {
            0: {"o_proj": torch.randn(h, generator=gen), "down_proj": torch.randn(h, generator=gen)},
            1: {"o_proj": torch.randn(h, generator=gen)},
        }
    return PruningPlan("tiny", "manual", {}, 0.5, layers, compensation=compensation)


@pytest.mark.parametrize("with_compensation", [False, True])
def test_pruned_logits_equal_masked(family, with_compensation):
    model = make_tiny_model(family)
    plan = _plan(get_adapter(model), with_compensation)
    masked = mask_plan(model, plan)
    ids = torch.randint(3, 96, (2, 12), generator=torch.Generator().manual_seed(0))
    expected = masked(ids).logits
    apply_plan(model, plan)
    assert (model(ids).logits - expected).abs().max().item() <= 1e-5
    adapter = get_adapter(model)
    assert adapter.num_layers == 3  # layer 3 deleted
    assert adapter.attention(1) is None and adapter.input_norm(1) is None
    assert adapter.mlp(2) is None and adapter.post_attention_norm(2) is None
    assert adapter.kv_heads(0) == 1 and adapter.mlp_channels(0) == 4


def test_generate_with_cache_matches_masked(family):
    model = make_tiny_model(family)
    plan = _plan(get_adapter(model))
    masked = mask_plan(model, plan)
    apply_plan(model, plan)
    prompt = torch.randint(3, 96, (1, 6), generator=torch.Generator().manual_seed(2))
    kwargs = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": 0}
    assert torch.equal(model.generate(prompt, **kwargs), masked.generate(prompt, **kwargs))
    # The attention modules own consecutive KV-cache slots.
    slots = [layer.self_attn.layer_idx for layer in get_adapter(model).layers if layer.self_attn is not None]
    assert slots == list(range(len(slots)))


def test_achieved_ratio_matches_prediction(family):
    model = make_tiny_model(family)
    base = make_tiny_model(family)
    plan = _plan(get_adapter(model), with_compensation=True)
    predicted = plan_decoder_ratio(get_adapter(model), plan)
    apply_plan(model, plan)
    assert achieved_ratios(model, base)["decoder_ratio"] == pytest.approx(predicted, abs=1e-12)


def test_lora_attaches_to_pruned_model():
    model = make_tiny_model("llama3")
    apply_plan(model, _plan(get_adapter(model)))
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=targets))
    peft_model(torch.randint(3, 96, (1, 5))).logits.sum().backward()
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_group_size_stays_valid_under_gqa():
    model = make_tiny_model("llama3")
    apply_plan(model, PruningPlan("tiny", "manual", {}, 0.1, {0: LayerPlan(kv_heads=[1])}))
    attn = get_adapter(model).attention(0)
    assert attn.num_key_value_groups == 2
    assert attn.q_proj.out_features == 2 * 8 and attn.k_proj.out_features == 8


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ({7: LayerPlan(kv_heads=[0])}, "layer 7"),
        ({0: LayerPlan(kv_heads=[5])}, "kv_heads"),
        ({0: LayerPlan(mlp_channels=[48])}, "mlp_channels"),
        ({0: LayerPlan(mlp_channels=[3, 1])}, "sorted"),
    ],
)
def test_plan_that_does_not_fit_the_model_is_refused(layers, message):
    model = make_tiny_model("llama3")
    with pytest.raises(PrunebenchError, match=message):
        apply_plan(model, PruningPlan("tiny", "manual", {}, 0.1, layers))


def test_plan_for_an_already_pruned_model_is_refused():
    model = make_tiny_model("llama3")
    apply_plan(model, PruningPlan("tiny", "manual", {}, 0.1, {0: LayerPlan(kv_heads=[1])}))
    with pytest.raises(PrunebenchError, match="already pruned"):
        apply_plan(model, PruningPlan("tiny", "manual", {}, 0.1, {1: LayerPlan(kv_heads=[1])}))


def test_unsupported_family_is_named():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32))
    with pytest.raises(PrunebenchError, match=r"'gpt2'.*llama, mistral, qwen2"):
        get_adapter(model)
