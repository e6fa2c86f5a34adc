"""cfsp_lora: angular layer importance, ranks proportional to it with the uniform total, CFSP scores
mapped through the plan's kept layers."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from recovery_fixtures import make_model, make_tokenizer, one_thread, write_corpus

from prunebench.errors import PrunebenchError
from prunebench.methods import Scores
from prunebench.models import apply_plan, save_pretrained
from prunebench.plan import LayerPlan, PruningPlan
from prunebench.recovery import Budget, RecoveryConfig, recover
from prunebench.recovery.cfsp_lora import allocate_ranks, angular_importance, importance_from_scores
from prunebench.recovery.lora import attach_lora


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_thread():
        yield


@pytest.mark.parametrize(
    "importance", [[1.0, 2.0, 3.0, 4.0], [5.0, 0.3, 0.3, 9.0, 2.2, 7.1], [2.0, 2.0, 2.0], [0.0, 0.0, 1.0]]
)
@pytest.mark.parametrize("base_rank", [8, 16])
def test_ranks_proportional_and_total_equal_to_uniform(importance, base_rank):
    s = torch.tensor(importance)
    ranks = allocate_ranks(s, base_rank)
    assert sum(ranks) == base_rank * len(importance)
    assert min(ranks) >= 1
    ideal = [base_rank * x / (sum(importance) / len(importance)) for x in importance]
    if min(ideal) >= 1:  # no layer raised to the floor of rank 1: each rank rounds its share
        assert all(abs(r - t) < 1 for r, t in zip(ranks, ideal, strict=True))
    else:
        assert all(r == 1 for r, t in zip(ranks, ideal, strict=True) if t < 1)
    order = sorted(range(len(s)), key=lambda i: importance[i])
    assert all(ranks[a] <= ranks[b] for a, b in itertools.pairwise(order))  # monotone
    assert allocate_ranks(s, base_rank) == ranks


def test_ranks_of_equal_importance_are_uniform_and_bad_importance_refused():
    assert allocate_ranks(torch.tensor([3.0, 3.0, 3.0]), 8) == [8, 8, 8]
    assert allocate_ranks(torch.zeros(4), 8) == [8, 8, 8, 8]
    with pytest.raises(PrunebenchError, match="finite and >= 0"):
        allocate_ranks(torch.tensor([1.0, -1.0]), 8)
    with pytest.raises(PrunebenchError, match="finite and >= 0"):
        allocate_ranks(torch.tensor([1.0, math.nan]), 8)


def test_peft_gets_the_per_layer_ranks_with_uniform_scale():
    tokenizer = make_tokenizer()
    model = make_model(len(tokenizer), layers=3)
    config = RecoveryConfig()
    peft_model = attach_lora(model, config, [4, 13, 7])
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            layer = int(name.split("layers.")[1].split(".")[0])
            rank = [4, 13, 7][layer]
            assert module.lora_A["default"].weight.shape[0] == rank
            assert module.scaling["default"] == pytest.approx(config.lora_alpha / config.lora_r)


def test_angular_importance_matches_hidden_states_and_is_zero_for_an_identity_block():
    tokenizer = make_tokenizer()
    model = make_model(len(tokenizer), layers=3)
    with torch.no_grad():  # layer 1 becomes the identity: its output equals its input
        model.model.layers[1].self_attn.o_proj.weight.zero_()
        model.model.layers[1].mlp.down_proj.weight.zero_()
    ids = torch.randint(4, len(tokenizer), (2, 10))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # padding is not counted
    got = angular_importance(model, [{"input_ids": ids, "attention_mask": mask}])
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    h_in, h_out = hidden[0], hidden[1]  # layer 0's input and output
    cos = torch.nn.functional.cosine_similarity(h_in, h_out, dim=-1).clamp(-1, 1)
    expected0 = float((torch.arccos(cos) / math.pi * mask).sum())
    assert float(got[0]) == pytest.approx(expected0, rel=1e-5)
    # arccos(1 - 1e-7) ~ 1.4e-4 per token: fp32 rounding, far below a real block (got[0], got[2])
    assert float(got[1]) < 1e-2 < 0.1 < min(float(got[0]), float(got[2]))


def test_importance_from_cfsp_scores_follows_kept_layers(tmp_path):
    tokenizer = make_tokenizer()
    model = make_model(len(tokenizer), layers=4)
    plan = PruningPlan("tiny", "cfsp", {}, 0.3, {1: LayerPlan(kv_heads=[], mlp_channels=[])})
    apply_plan(model, plan)
    save_pretrained(model, tmp_path / "pruned", tokenizer=tokenizer, plan=plan)
    Scores({"coarse_importance": torch.tensor([10.0, 99.0, 30.0, 20.0])}, {"method": "cfsp"}).save(
        tmp_path / "s"
    )
    got = importance_from_scores(str(tmp_path / "s"), str(tmp_path / "pruned"), 3)
    assert got.tolist() == [10.0, 30.0, 20.0]
    Scores({"fine": torch.ones(3)}, {}).save(tmp_path / "other")
    with pytest.raises(PrunebenchError, match="no 'coarse_importance'"):
        importance_from_scores(str(tmp_path / "other"), str(tmp_path / "pruned"), 3)
    with pytest.raises(PrunebenchError, match="do not match"):
        importance_from_scores(str(tmp_path / "s"), str(tmp_path / "pruned"), 4)

    corpus = write_corpus(str(tmp_path / "corpus"))
    config = RecoveryConfig(batch_size=2, seqlen=8, val_batches=1)
    summary = recover(
        str(tmp_path / "pruned"),
        "cfsp_lora",
        corpus,
        str(tmp_path / "out"),
        Budget(steps=2),
        config=config,
        scores_dir=str(tmp_path / "s"),
        show_progress=False,
    )
    assert summary["lora_ranks"]["ranks"] == allocate_ranks(torch.tensor([10.0, 30.0, 20.0]), 8) == [4, 12, 8]
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["lora_ranks"]["importance_source"].startswith("CFSP scores")
