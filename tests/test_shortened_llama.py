"""Shortened LLaMA: PPL and Taylor block criteria, the "+" heuristic, one-shot physical removal."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from block_models import own_text, sharp_model, without_layers
from conftest import make_tiny_model
from transformers import AutoModelForCausalLM

from prunebench.errors import PrunebenchError
from prunebench.methods import Scores, get_method
from prunebench.methods.shortened_llama import block_removal_nll, block_taylor
from prunebench.models import apply_plan, get_adapter, save_pretrained
from prunebench.models.counting import achieved_ratios

CRITERIA = ["shortened-ppl", "shortened-taylor"]


def _plan(name: str, model, calibration, ratio: float, **params):
    method = get_method(name)
    config = method.config(params)
    method.check_ratio(model, ratio, config)
    return method.select(method.score(model, calibration, config), model, ratio, config)


@pytest.mark.parametrize("family", ["llama", "llama3", "mistral", "qwen2"])
def test_ppl_criterion_equals_deleting_each_block(family):
    model = make_tiny_model(family, num_hidden_layers=5)
    calibration = torch.randint(3, 96, (3, 12), generator=torch.Generator().manual_seed(1))
    fast = block_removal_nll(get_adapter(model), calibration, batch_size=2)
    naive = []
    for i in range(5):
        with torch.no_grad():
            naive.append(without_layers(model, [i])(calibration, labels=calibration, use_cache=False).loss)
    assert torch.allclose(fast, torch.stack(naive).double(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("batch_size", [4, 2])
def test_taylor_equals_direct_computation(batch_size):
    model = make_tiny_model("qwen2", num_hidden_layers=4)
    calibration = torch.randint(3, 96, (4, 10), generator=torch.Generator().manual_seed(2))
    ours = block_taylor(get_adapter(model), calibration, batch_size=batch_size)

    # Direct: Σ over blocks' weight tensors (projections and norms, not biases) of |W * dL/dW|,
    # L = sum over batches of the batch-mean next-token cross-entropy.
    weights = [
        [p for n, p in layer.named_parameters() if n.endswith("weight")] for layer in model.model.layers
    ]
    flat = [p for block in weights for p in block]
    loss = 0
    for rows in calibration.split(batch_size):
        logits = model(rows, use_cache=False).logits[:, :-1]
        loss = loss + F.cross_entropy(logits.reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1))
    grads = dict(zip(map(id, flat), torch.autograd.grad(loss, flat), strict=True))
    direct = torch.tensor(
        [sum(float((p.detach() * grads[id(p)]).abs().sum()) for p in block) for block in weights],
        dtype=torch.float64,
    )
    assert len(weights[0]) == 9  # q, k, v, o, gate, up, down, two norms
    assert torch.allclose(ours, direct, rtol=1e-4, atol=0)
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("name", CRITERIA)
@pytest.mark.parametrize(("identity", "plus"), [(5, True), (1, False)])
def test_identity_block_is_removed_first(name, identity, plus):
    model = sharp_model(identity=(identity,))
    calibration = own_text(model)
    method = get_method(name)
    config = method.config({"plus_heuristic": plus})
    scores = method.score(model, calibration, config)
    assert scores.meta["order"][0] == identity
    plan = method.select(scores, model, 0.1, config)  # 0.1 of 8 equal blocks -> one block
    assert sorted(plan.layers) == [identity]
    assert plan.notes["native"]["blocks_removed"] == 1


@pytest.mark.parametrize("name", CRITERIA)
def test_plus_heuristic_protects_first_four_and_last_two(name):
    model = sharp_model(identity=(0, 7))  # identity blocks that raw scores rank first
    calibration = own_text(model)
    method = get_method(name)
    plus = method.config({})
    assert plus.plus_heuristic  # on by default, as in the official scripts
    scores = method.score(model, calibration, plus)
    assert set(scores.meta["order"][:2]) == {0, 7}
    plan = method.select(scores, model, 0.25, plus)  # two blocks: all that "+" leaves on 8 layers
    assert sorted(plan.layers) == [4, 5]
    assert plan.notes["protected_blocks"] == [0, 1, 2, 3, 6, 7]
    off = method.config({"plus_heuristic": "false"})
    assert sorted(method.select(scores, model, 0.25, off).layers) == [0, 7]


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.4, 0.6])
def test_achieved_ratio_is_the_smallest_block_count_reaching_the_target(ratio):
    model = sharp_model(identity=(), layers=8, family="mistral")
    dense = sharp_model(identity=(), layers=8, family="mistral")
    plan = _plan("shortened-taylor", model, own_text(model), ratio, plus_heuristic=False)
    apply_plan(model, plan)
    achieved = achieved_ratios(model, dense)["decoder_ratio"]
    blocks = math.ceil(ratio * 8 - 1e-9)  # all 8 blocks are the same size
    assert plan.notes["native"]["blocks_removed"] == blocks == 8 - get_adapter(model).num_layers
    assert ratio <= achieved < ratio + 1 / 8
    assert achieved == pytest.approx(blocks / 8)


def test_pruned_model_is_a_plain_hf_checkpoint(tmp_path):
    model = sharp_model(identity=(4,), layers=8, family="llama")
    dense = sharp_model(identity=(4,), layers=8, family="llama")
    plan = _plan("shortened-ppl", model, own_text(model), 0.2, plus_heuristic=True)
    removed = sorted(plan.layers)
    assert len(removed) == 2 and 4 in removed
    apply_plan(model, plan)
    save_pretrained(model, tmp_path / "p", plan=plan)
    config = (tmp_path / "p" / "config.json").read_text()
    assert "auto_map" not in config
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "p").eval()
    assert loaded.config.num_hidden_layers == 6
    ids = torch.arange(3, 23).view(2, 10)
    with torch.no_grad():
        reference = without_layers(dense, removed)(ids, use_cache=False).logits  # official weight copy
        assert (loaded(ids).logits - reference).abs().max().item() <= 1e-5
        generated = loaded.generate(ids[:1], max_new_tokens=4, do_sample=False)
    assert generated.shape == (1, 14)


def test_ratio_beyond_the_unprotected_blocks_fails_before_scoring():
    model = sharp_model(layers=8)
    method = get_method("shortened-ppl")
    with pytest.raises(PrunebenchError, match="protected"):
        method.check_ratio(model, 0.3, method.config({}))  # "+" leaves only blocks 4 and 5
    method.check_ratio(model, 0.3, method.config({"plus_heuristic": False}))
    with pytest.raises(PrunebenchError, match="blocks"):
        method.check_ratio(model, 0.9, method.config({"plus_heuristic": False}))  # needs all 8
    six = sharp_model(layers=6)
    with pytest.raises(PrunebenchError, match="protected"):
        method.check_ratio(six, 0.1, method.config({}))  # "+" protects all six


def test_bad_input_is_a_clear_error():
    model = sharp_model(layers=6)
    method = get_method("shortened-taylor")
    config = method.config({"plus_heuristic": False})
    with pytest.raises(PrunebenchError, match="calibration"):
        method.score(model, torch.zeros(4, dtype=torch.long), config)
    with pytest.raises(PrunebenchError, match="calibration"):
        method.score(model, torch.zeros(2, 8), config)
    with pytest.raises(PrunebenchError, match="batch_size"):
        method.config({"batch_size": 0})
    with pytest.raises(PrunebenchError, match="plus_heuristic"):
        method.config({"plus_heuristc": False})
    other = Scores({"block_taylor": torch.zeros(8, dtype=torch.float64)}, {})
    with pytest.raises(PrunebenchError, match="8 blocks"):
        method.select(other, model, 0.2, config)
