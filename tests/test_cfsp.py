"""CFSP: formulas against hand-worked numbers, scoring on tiny models, ratio mapping, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_tiny_model
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from prunebench.errors import PrunebenchError
from prunebench.methods import get_method
from prunebench.methods.cfsp import (
    CfspConfig,
    angular_distance,
    coarse_importance,
    fine_score,
    keep_ratios,
    kept_count,
)
from prunebench.models import apply_plan
from prunebench.models.counting import achieved_ratios


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def tiny_llama(head_dim: int = 16, heads: int = 4, kv_heads: int = 2, layers: int = 3, seed: int = 0):
    """Llama-3-like GQA model; hidden = heads * head_dim, intermediate 128."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=96,
        hidden_size=heads * head_dim,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def tiny_qwen2(seed: int = 0):
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(config).eval()


def calibration(n: int = 3, t: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 96, (n, t), generator=torch.Generator().manual_seed(seed))


SMALL = {"round_to": 8}  # tiny models have 128 channels; the official multiple is 128


# ---------------------------------------------------------------- allocation (§1.5)


def test_allocation_shrink_branch_worked_numbers():
    # I = [0, 1e4, 2e4]: mean 1e4, z = [-1, 0, 1], s = [σ(-1), 0.5, σ(1)], mean(s) = 0.5 since
    # σ(-1) + σ(1) = 1. r = 0.2: max/mean*(1-r) = 1.4621*0.8 = 1.17 >= 1, so shrink with
    # κ = 0.5*(1/0.8 - 1) / (σ(1) - 0.5) / 1.05, i.e. the top deviation becomes 0.5*0.25/1.05 = 0.125/1.05.
    # Keep ratios k = s'/0.5*0.8 = 0.8 ± 1.6*0.125/1.05 = 0.8 ± 0.2/1.05.
    s = coarse_importance([0.0, 1e4, 2e4], a=1.0)
    assert s == pytest.approx([sigmoid(-1), 0.5, sigmoid(1)], abs=1e-12)
    k = keep_ratios(s, 0.2)
    assert k == pytest.approx([0.8 - 0.2 / 1.05, 0.8, 0.8 + 0.2 / 1.05], abs=1e-12)
    assert sum(k) / 3 == pytest.approx(0.8, abs=1e-12)


def test_allocation_no_shrink_and_temperature():
    # r = 0.5, a = 1: max/mean*(1-r) = σ(1)/0.5*0.5 = 0.731 < 1, no shrink; k = s/0.5*0.5 = s.
    s = coarse_importance([0.0, 1e4, 2e4], a=1.0)
    assert keep_ratios(s, 0.5) == pytest.approx([sigmoid(-1), 0.5, sigmoid(1)], abs=1e-12)
    # a = 2 doubles z: s = [σ(-2), 0.5, σ(2)] = [0.1192, 0.5, 0.8808]; still no shrink at r = 0.5.
    s2 = coarse_importance([0.0, 1e4, 2e4], a=2.0)
    assert keep_ratios(s2, 0.5) == pytest.approx([sigmoid(-2), 0.5, sigmoid(2)], abs=1e-12)


def test_allocation_constant_makes_small_scores_uniform():
    # The absolute 1e4 divisor: differences of a few units give z ~ 1e-4, so k ~ 1 - r everywhere.
    k = keep_ratios(coarse_importance([1.0, 2.0, 5.0], a=1.0), 0.3)
    assert k == pytest.approx([0.7, 0.7, 0.7], abs=1e-4)
    assert k[2] > k[1] > k[0]


# ---------------------------------------------------------------- rounding (§1.7)


def test_cuda_friendly_rounding_worked_numbers():
    # m = 512, keep ratios of the shrink example: m*k + 64 = 376.1, 473.6, 571.1 -> //128 = 2, 3, 4.
    assert kept_count(512, 0.8 - 0.2 / 1.05, 128, True) == 256
    assert kept_count(512, 0.8, 128, True) == 384
    assert kept_count(512, 0.8 + 0.2 / 1.05, 128, True) == 512
    # exactly half a multiple rounds up: 512*0.125 + 64 = 128 -> 1*128
    assert kept_count(512, 0.125, 128, True) == 128
    # without cuda_friendly the official index int(m*k) keeps int(m*k) + 1 channels: 409 + 1
    assert kept_count(512, 0.8, 128, False) == 410


def test_rounding_fixes_keep_all_bug_and_caps_width():
    # m*k = 51.2 < 64: the official index int(115.2/128)*128 - 1 = -1 selects the smallest score as the
    # threshold, so the layer keeps all 512 channels. Fixed: the nearest non-empty multiple, 128.
    assert kept_count(512, 0.1, 128, True) == 128
    assert kept_count(512, 0.0, 128, True) == 128
    # m = 200 is not a multiple of 128: 200*0.99 + 64 = 262 -> 256 > 200 (official IndexError) -> 200
    assert kept_count(200, 0.99, 128, True) == 200
    # a small multiple for tiny models: 128*0.7 + 4 = 93.6 -> //8 = 11 -> 88
    assert kept_count(128, 0.7, 8, True) == 88


# ---------------------------------------------------------------- fine score (§1.6)


def test_fine_score_worked_example():
    # d = 2, m = 2, A = [2, 1], b = c = 1.
    # T1 = |W_down| * A normalised per column: col0 [2, 6]/8, col1 [2, 4]/6
    # T2 = |W_up^T| per column: col0 [1, 1]/2, col1 [1, 3]/4;  T3 = |W_gate^T|: col0 [1, 0], col1 [0, 1]
    # S_0 = mean([0.25+0.5+1, 0.75+0.5+0]) * 2 = 3.0;  S_1 = mean([1/3+0.25, 2/3+0.75+1]) * 1 = 1.5
    w_down = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    w_up = torch.tensor([[1.0, 1.0], [1.0, 3.0]])
    w_gate = torch.tensor([[2.0, 0.0], [0.0, 5.0]])
    score = fine_score(w_down, w_up, w_gate, torch.tensor([2.0, 1.0]), b=1.0, c=1.0)
    assert score.tolist() == pytest.approx([3.0, 1.5], abs=1e-6)


@pytest.mark.parametrize(("b", "c"), [(1.0, 1.0), (0.5, 2.0), (2.0, 0.5)])
def test_fine_score_reduces_to_activation_norm(b, c):
    # Every normalised term sums to 1 over the d rows, so S_j = 3/d * A_j**c whatever W and b are.
    g = torch.Generator().manual_seed(1)
    d, m = 16, 24
    act = torch.rand(m, generator=g) + 0.1
    score = fine_score(
        torch.randn(d, m, generator=g),
        torch.randn(m, d, generator=g),
        torch.randn(m, d, generator=g),
        act,
        b,
        c,
    )
    assert torch.allclose(score, 3 / d * act.pow(c), rtol=1e-5)


def test_fine_score_dead_channel_is_zero_not_nan():
    score = fine_score(
        torch.ones(4, 3), torch.ones(3, 4), torch.ones(3, 4), torch.tensor([1.0, 0.0, 2.0]), 1.0, 1.0
    )
    assert torch.isfinite(score).all()
    assert score[1] == 0


# ---------------------------------------------------------------- angular distance (§1.4)


def test_angular_distance_clamps_rounding_above_one():
    x = torch.full((1, 3), 0.1)
    raw_cos = (x * x).sum() / (x.norm() * x.norm())
    assert raw_cos > 1  # fp32 rounding: unclamped arccos would be NaN here
    assert angular_distance(x, x).tolist() == [0.0]


def test_angular_distance_values():
    h_in = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    h_out = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [1.0, 0.0]])
    # same direction 0, orthogonal 1/2, opposite 1, zero-norm token: NaN -> cos 0.5 -> arccos(0.5)/π = 1/3
    assert angular_distance(h_in, h_out).tolist() == pytest.approx([0.0, 0.5, 1.0, 1 / 3], abs=1e-6)


# ---------------------------------------------------------------- scoring on tiny models


def _direct_layer_statistics(model, calib):
    """Per-layer angular sums from output_hidden_states (dense activations) and down_proj inputs."""
    layers = model.model.layers
    captured = {i: [] for i in range(len(layers))}
    handles = [
        layer.mlp.down_proj.register_forward_pre_hook(lambda m, a, i=i: captured[i].append(a[0]))
        for i, layer in enumerate(layers)
    ]
    with torch.no_grad():
        out = model(calib, output_hidden_states=True)
    for h in handles:
        h.remove()
    hs = out.hidden_states  # hs[i] enters layer i; the last entry is after the final norm
    angular = [angular_distance(hs[i], hs[i + 1]).sum().item() for i in range(len(layers) - 1)]
    rho = [torch.cat(captured[i]).float().pow(2).sum(dim=(0, 1)) / calib.shape[0] for i in range(len(layers))]
    return angular, rho


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: tiny_llama(head_dim=16, heads=4, kv_heads=2), id="llama3-gqa"),
        pytest.param(lambda: tiny_llama(head_dim=32, heads=2, kv_heads=1), id="hd32"),
        pytest.param(lambda: tiny_llama(head_dim=64, heads=2, kv_heads=2), id="hd64"),
        pytest.param(tiny_qwen2, id="qwen2"),
        pytest.param(
            lambda: make_tiny_model("mistral", intermediate_size=64, num_hidden_layers=3), id="mistral"
        ),
    ],
)
def test_scores_match_dense_activations(build):
    model = build()
    calib = calibration()
    method = get_method("cfsp")
    config = CfspConfig.from_params(SMALL)
    scores = method.score(model, calib, config)
    angular, rho = _direct_layer_statistics(model, calib)
    assert scores.tensors["angular_distance"][:-1].tolist() == pytest.approx(angular, rel=1e-5)
    assert torch.allclose(scores.tensors["act_norm"], torch.stack(rho).sqrt(), rtol=1e-4)
    d = model.config.hidden_size
    assert torch.allclose(scores.tensors["fine_score"], 3 / d * scores.tensors["act_norm"], rtol=1e-4)
    expected = coarse_importance(scores.tensors["angular_distance"].tolist(), 1.0)
    assert scores.tensors["coarse_importance"].tolist() == pytest.approx(expected, abs=1e-15)
    assert "coarse_importance" in scores.meta["keys"]


@pytest.mark.parametrize("target", [0.1, 0.25])
@pytest.mark.parametrize("build", [tiny_llama, tiny_qwen2], ids=["llama", "qwen2"])
def test_select_reaches_target_and_prunes_physically(build, target):
    model = build()
    method = get_method("cfsp")
    config = CfspConfig.from_params(SMALL)
    scores = method.score(model, calibration(), config)
    plan = method.select(scores, model, target, config)
    notes = plan.notes
    assert abs(notes["achieved_decoder_ratio"] - target) <= 0.02
    assert notes["native_ffn_ratio"] > target  # FFN channels only: a larger fraction of them goes
    assert all(lp.kv_heads is None for lp in plan.layers.values())
    for i, lp in plan.layers.items():
        kept = lp.mlp_channels if lp.mlp_channels is not None else list(range(128))
        assert len(kept) == notes["kept_channels"][i] and len(kept) % 8 == 0
        expected = torch.sort(scores.tensors["fine_score"][i], descending=True, stable=True).indices[
            : len(kept)
        ]
        assert kept == sorted(expected.tolist())
    dense = build()
    pruned = apply_plan(build(), plan)
    assert achieved_ratios(pruned, dense)["decoder_ratio"] == pytest.approx(notes["achieved_decoder_ratio"])
    with torch.no_grad():
        assert torch.isfinite(pruned(calibration(1, 8, seed=5)).logits).all()


def test_native_ffn_ratio_param_and_determinism():
    model = tiny_llama()
    method = get_method("cfsp")
    config = CfspConfig.from_params({**SMALL, "ffn_ratio": 0.5})
    scores = method.score(model, calibration(), config)
    again = method.score(model, calibration(), config)
    assert all(torch.equal(scores.tensors[k], again.tensors[k]) for k in scores.tensors)
    plan = method.select(scores, model, 0.2, config)
    assert plan.notes["native_ffn_ratio"] == 0.5 and plan.notes["native_given"]
    # nearly uniform allocation (tiny calibration, 1e4 constant): each layer keeps ~64 of 128 channels
    assert plan.notes["kept_channels"] == [64, 64, 64]
    assert plan.notes["achieved_ffn_channel_ratio"] == 0.5


def test_select_rejects_scores_from_other_parameters():
    model = tiny_llama()
    method = get_method("cfsp")
    scores = method.score(model, calibration(), CfspConfig.from_params(SMALL))
    with pytest.raises(PrunebenchError, match=r"a=1\.0"):
        method.select(scores, model, 0.2, CfspConfig.from_params({**SMALL, "a": 2.0}))


# ---------------------------------------------------------------- bad input, before scoring


class _ForwardCounter:
    def __init__(self, model):
        self.calls = 0
        model.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.calls += 1


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_ratio_outside_range(ratio):
    model = tiny_llama()
    with pytest.raises(PrunebenchError, match=r"\[0, 1\)"):
        get_method("cfsp").check_ratio(model, ratio, CfspConfig.from_params(SMALL))


def test_unreachable_ratio_is_rejected_before_scoring():
    model = tiny_llama()
    # FFN share here: 3 * 64 * 128 per layer of 3*64*128 + attention (2*64*64 + 2*64*32) + norms
    # = 24576 / (24576 + 12288 + 128) = 0.664; keeping 8 channels per layer caps it at 0.623.
    with pytest.raises(PrunebenchError, match="FFN channels only"):
        get_method("cfsp").check_ratio(model, 0.7, CfspConfig.from_params(SMALL))
    # with the official multiple of 128 a 128-wide FFN cannot shrink at all
    with pytest.raises(PrunebenchError, match="FFN channels only"):
        get_method("cfsp").check_ratio(model, 0.1, CfspConfig.from_params({}))


def test_unknown_option():
    with pytest.raises(PrunebenchError, match="round_to"):
        CfspConfig.from_params({"round_too": 8})


def test_command_line_strings_are_coerced_to_optional_fields():
    assert CfspConfig.from_params({"ffn_ratio": "0.5", "round_to": "8"}).ffn_ratio == 0.5
    assert CfspConfig.from_params({"ffn_ratio": "none"}).ffn_ratio is None
    with pytest.raises(PrunebenchError, match="ffn_ratio='half' is not a valid float"):
        CfspConfig.from_params({"ffn_ratio": "half"})


def test_unsupported_family_and_short_calibration_fail_before_forward():
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=96)).eval()
    counter = _ForwardCounter(gpt2)
    with pytest.raises(PrunebenchError, match="gpt2"):
        get_method("cfsp").score(gpt2, calibration(), CfspConfig.from_params(SMALL))
    assert counter.calls == 0
    model = tiny_llama()
    counter = _ForwardCounter(model.model)
    with pytest.raises(PrunebenchError, match="calibration"):
        get_method("cfsp").score(model, torch.zeros(0, 12, dtype=torch.long), CfspConfig.from_params(SMALL))
    assert counter.calls == 0


# ---------------------------------------------------------------- generic CLI


@pytest.mark.parametrize(
    ("method", "params"),
    [("cfsp", ["--param", "round_to=8", "--param", "a=1"]), ("magnitude-sp", [])],
)
def test_cli_score_then_prune(tmp_path, tiny_tokenizer, tiny_text, method, params):
    from prunebench.cli import main
    from prunebench.models import load_pretrained, save_pretrained
    from prunebench.plan import PruningPlan

    save_pretrained(tiny_llama(), tmp_path / "dense", tokenizer=tiny_tokenizer)
    (tmp_path / "calib.txt").write_text(tiny_text)
    common = ["--model", str(tmp_path / "dense"), "--method", method, *params]
    calib = ["--calib", str(tmp_path / "calib.txt"), "--nsamples", "2", "--seqlen", "16"]
    assert main(["score", *common, *calib, "--out", str(tmp_path / "scores")]) == 0
    out = tmp_path / "pruned"
    assert (
        main(["prune", *common, "--ratio", "0.25", "--scores", str(tmp_path / "scores"), "--out", str(out)])
        == 0
    )
    plan = PruningPlan.load(out / "plan.json")
    assert abs(plan.achieved["decoder_ratio"] - 0.25) <= 0.02
    pruned, _ = load_pretrained(str(out))
    with torch.no_grad():
        assert torch.isfinite(pruned(calibration(1, 8)).logits).all()


def test_cli_unreachable_ratio_is_one_line_error(tmp_path, tiny_tokenizer, capsys):
    from prunebench.cli import main
    from prunebench.models import save_pretrained

    save_pretrained(tiny_llama(), tmp_path / "dense", tokenizer=tiny_tokenizer)
    argv = ["prune", "--model", str(tmp_path / "dense"), "--method", "cfsp", "--param", "round_to=8"]
    assert main([*argv, "--ratio", "0.7", "--calib", "nonexistent.txt", "--out", str(tmp_path / "p")]) == 2
    assert "FFN channels only" in capsys.readouterr().err


def test_cli_short_calibration_text_fails_before_scoring(tmp_path, tiny_tokenizer, capsys):
    from prunebench.cli import main
    from prunebench.models import save_pretrained

    save_pretrained(tiny_llama(), tmp_path / "dense", tokenizer=tiny_tokenizer)
    (tmp_path / "short.txt").write_text("a few words")
    argv = [
        "score",
        "--model",
        str(tmp_path / "dense"),
        "--method",
        "cfsp",
        "--calib",
        str(tmp_path / "short.txt"),
        "--seqlen",
        "32",  # within the model's context of 64 tokens (CFSP's default 1024 is refused first)
    ]
    assert main([*argv, "--out", str(tmp_path / "scores")]) == 2
    assert "one sample of seqlen=32 tokens needs at least 32" in capsys.readouterr().err
    assert not (tmp_path / "scores").exists()
