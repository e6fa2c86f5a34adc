"""magnitude-sp: weight-norm scores by KV group and channel, uniform per-layer selection."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from prunebench.errors import PrunebenchError
from prunebench.methods import get_method
from prunebench.methods.magnitude_sp import MagnitudeSpConfig, channel_scores, group_scores
from prunebench.methods.width_budget import uniform_counts
from prunebench.models import apply_plan, get_adapter
from prunebench.models.counting import achieved_ratios


def tiny_llama(head_dim: int = 16, heads: int = 4, kv_heads: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=96,
        hidden_size=heads * head_dim,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def tiny_qwen2(seed: int = 0):
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return Qwen2ForCausalLM(config).eval()


def test_scores_worked_example():
    # down_proj [d=2, m=3]: column norms |(3,4)| = 5, |(0,1)| = 1, |(6,8)| = 10
    assert channel_scores(torch.tensor([[3.0, 0.0, 6.0], [4.0, 1.0, 8.0]])).tolist() == [5.0, 1.0, 10.0]
    # o_proj [d=2, 4 columns], 2 KV groups of 2 columns each: norms 5, 1, 10, 0 -> groups 6 and 10
    o_proj = torch.tensor([[3.0, 0.0, 6.0, 0.0], [4.0, 1.0, 8.0, 0.0]])
    assert group_scores(o_proj, 2).tolist() == [6.0, 10.0]


def test_gqa_group_owns_its_query_heads_columns():
    # 4 query heads, 2 KV heads (g = 2), head_dim 16: group 1 = query heads 2, 3 = o_proj columns 32..63.
    model = tiny_llama()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[:, 32:64] *= 0.01
    method = get_method("magnitude-sp")
    scores = method.score(model, None, MagnitudeSpConfig.from_params({}))
    assert (scores.tensors["group_score"][:, 1] < scores.tensors["group_score"][:, 0]).all()
    plan = method.select(scores, model, 0.5, MagnitudeSpConfig.from_params({}))
    assert uniform_counts(get_adapter(model), 0.5).kv_groups_removed == 1  # precondition of the next line
    assert all(lp.kv_heads == [0] for lp in plan.layers.values())


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: tiny_llama(16, 4, 2), id="llama3-gqa"),
        pytest.param(lambda: tiny_llama(32, 2, 1), id="hd32"),
        pytest.param(lambda: tiny_llama(64, 2, 2), id="hd64"),
        pytest.param(tiny_qwen2, id="qwen2"),
    ],
)
@pytest.mark.parametrize("target", [0.1, 0.5])  # no KV group removed at 0.1, one at 0.5
def test_uniform_selection_and_surgery(build, target):
    model = build()
    method = get_method("magnitude-sp")
    config = MagnitudeSpConfig.from_params({})
    scores = method.score(model, None, config)
    plan = method.select(scores, model, target, config)
    counts = uniform_counts(get_adapter(model), target)
    kv_keep = model.config.num_key_value_heads - counts.kv_groups_removed
    ch_keep = 96 - counts.channels_removed
    assert plan.notes["native_pruning_ratio"] == counts.native_ratio
    channels = scores.tensors["channel_score"]
    for i, lp in plan.layers.items():
        kept = lp.mlp_channels if lp.mlp_channels is not None else list(range(96))
        assert len(kept) == ch_keep
        # every kept channel scores at least as high as every removed one
        removed = sorted(set(range(96)) - set(kept))
        if removed:
            assert channels[i, kept].min() >= channels[i, removed].max()
        heads = lp.kv_heads if lp.kv_heads is not None else list(range(model.config.num_key_value_heads))
        assert len(heads) == kv_keep
    pruned = apply_plan(build(), plan)
    assert achieved_ratios(pruned, build())["decoder_ratio"] == pytest.approx(
        plan.notes["achieved_decoder_ratio"]
    )
    with torch.no_grad():
        assert torch.isfinite(pruned(torch.arange(10).unsqueeze(0)).logits).all()


def test_bad_ratio_and_unknown_option():
    model = tiny_llama()
    method = get_method("magnitude-sp")
    scores = method.score(model, None, MagnitudeSpConfig.from_params({}))
    for ratio in (-0.1, 1.0):
        with pytest.raises(PrunebenchError, match=r"\[0, 1\)"):
            method.select(scores, model, ratio, MagnitudeSpConfig.from_params({}))
    with pytest.raises(PrunebenchError, match="bogus"):
        MagnitudeSpConfig.from_params({"bogus": 1})


def test_unsupported_family():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=96)).eval()
    with pytest.raises(PrunebenchError, match="gpt2"):
        get_method("magnitude-sp").score(gpt2, None, MagnitudeSpConfig.from_params({}))


def test_data_free_scoring_loads_no_calibration_text(tmp_path):
    from prunebench.steps import prune_model, score_model

    model_dir = "tests/data/tiny-model"
    missing = str(tmp_path / "no-such-corpus.txt")  # loading it would fail: proves it is never read
    scores = score_model(model_dir, "magnitude-sp", tmp_path / "scores", calib=missing)
    assert scores.meta["calibration"] is None
    assert not (tmp_path / "scores" / "calibration.safetensors").exists()
    plan = prune_model(model_dir, "magnitude-sp", 0.3, tmp_path / "pruned", calib=missing)
    assert plan.notes["achieved_decoder_ratio"] == pytest.approx(0.3, abs=0.05)
    with pytest.raises(PrunebenchError, match="no-such-corpus"):
        score_model(model_dir, "wanda-sp", tmp_path / "wanda", calib=missing)
