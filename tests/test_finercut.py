"""FinerCut: greedy sublayer search by output divergence, exclusion schedule, exact fast search."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model
from greedy_helpers import check_physical, model_with_identity, own_samples
from torch.nn import functional as F

from prunebench.cli import main
from prunebench.errors import PrunebenchError
from prunebench.methods import get_method
from prunebench.methods.finercut import ExclusionSchedule, OutputDivergence, leading_rows, reference_logits
from prunebench.methods.greedy_method import calibration_batches
from prunebench.methods.greedy_reference import masked, masked_score, reference_search
from prunebench.methods.greedy_search import greedy_search
from prunebench.methods.removal_order import Removal
from prunebench.models import get_adapter, load_pretrained, save_pretrained
from prunebench.models.counting import decoder_params, plan_decoder_ratio


def _score(model, calibration, **params):
    method = get_method("finercut")
    config = method.config(params)
    return method, config, method.score(model, calibration, config)


def _calibration(model):
    return own_samples(model, rows=4, length=16)


def test_identity_sublayer_is_removed_first_with_zero_divergence():
    model = model_with_identity(attn=(3,))
    _, _, scores = _score(model, _calibration(model), max_steps=2)
    assert scores.meta["order"][0] == [3, "attn"]
    assert scores.meta["order_names"][0] == "model.layers.3.self_attn.o_proj"
    assert abs(scores.meta["step_scores"][0]) < 1e-9  # zero up to fp32 rounding
    assert scores.meta["step_scores"][1] > 1e-6


@pytest.mark.parametrize(
    ("layers", "attn", "mlp", "expected"),
    [
        (12, (2, 10), (), [[10, "attn"], [2, "attn"]]),  # "model.layers.10" sorts before "model.layers.2"
        (4, (3,), (3,), [[3, "mlp"], [3, "attn"]]),  # "mlp.down_proj" sorts before "self_attn.o_proj"
    ],
)
def test_ties_go_to_the_first_name_in_lexicographic_order(layers, attn, mlp, expected):
    model = model_with_identity(layers=layers, attn=attn, mlp=mlp)
    _, _, scores = _score(model, _calibration(model), max_steps=2, exclude=0.0)
    assert scores.meta["order"] == expected
    assert scores.meta["step_scores"][0] == scores.meta["step_scores"][1]


def test_exclusion_schedule_as_in_the_official_code():
    # Llama-3-8B with -x 0.4: layers 0-12 protected until 26 sublayers are gone.
    official = ExclusionSchedule.build(32, "am", 0.4)
    assert {r.layer for r in official.excluded} == set(range(13)) and official.readmit_after == 26
    schedule = ExclusionSchedule.build(12, "am", 0.4)  # front = int(24·0.4/2)+1 = 5 layers, readmit after 10
    assert schedule.readmit_after == 10
    first = schedule.candidates([])
    assert first[:4] == [Removal(10, "mlp"), Removal(10, "attn"), Removal(11, "mlp"), Removal(11, "attn")]
    assert first[4] == Removal(5, "mlp") and {r.layer for r in first} == set(range(5, 12))
    nine = first[:9]
    assert schedule.candidates(nine) == first[9:]  # still protected after 9 removals
    ten = first[:10]
    assert schedule.candidates(ten) == [*first[10:], *schedule.excluded]  # appended after the rest
    assert schedule.excluded[:2] == (Removal(0, "mlp"), Removal(0, "attn"))
    attn_only = ExclusionSchedule.build(12, "a", 0.4)  # int(12·0.4/2)+1 = 3 layers excluded
    assert {r.part for r in attn_only.targets} == {"attn"} and len(attn_only.excluded) == 3


def test_excluded_identity_layer_waits_for_the_schedule():
    model = model_with_identity(attn=(0,))
    calibration = _calibration(model)
    _, _, protected = _score(model, calibration, exclude=0.4)
    assert protected.meta["order"].index([0, "attn"]) >= 4  # readmitted after int(8·0.4)+1 = 4 removals
    _, _, quirk = _score(model, calibration, exclude=0.0, max_steps=2)
    assert quirk.meta["order"][1] == [0, "attn"]  # x = 0 still keeps layer 0 out of step 1 only


@pytest.mark.parametrize(("divergence", "cache_gb"), [("js_code", 8.0), ("js", 0.0)])
def test_fast_search_returns_the_naive_order(divergence, cache_gb):
    model = make_tiny_model("llama3", num_hidden_layers=4, initializer_range=0.3)
    batches = calibration_batches(_calibration(model), 1, "t")
    criterion = OutputDivergence(reference_logits(model, batches), divergence)
    schedule = ExclusionSchedule.build(4, "am", 0.4)
    fast = greedy_search(model, batches, criterion, schedule.candidates, 8, "t", cache_gb, progress=False)
    naive = reference_search(model, batches, criterion, schedule.candidates, 8)
    assert fast.order == naive.order and fast.scores == naive.scores


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")  # the official reduction, on purpose
@pytest.mark.parametrize("divergence", ["js_code", "js"])
def test_divergence_formulas(divergence):
    model = make_tiny_model("llama3", num_hidden_layers=4, initializer_range=0.3)
    calibration = _calibration(model)
    batches = calibration_batches(calibration, 2, "t")
    removed = frozenset([Removal(1, "mlp"), Removal(2, "attn")])
    dense = model(calibration).logits.double()
    with masked(model, removed):
        pruned = model(calibration).logits.double()
    log_p, log_q = F.log_softmax(dense, -1), F.log_softmax(pruned, -1)
    m = 0.5 * (log_p.exp() + log_q.exp())
    if divergence == "js_code":  # the official compare_outputs_js_divergence, on all rows at once
        expected = 0.5 * (F.kl_div(log_p, m, reduction="mean") + F.kl_div(log_q, m, reduction="mean"))
    else:  # textbook JS per token, averaged over tokens
        kl_pm = (log_p.exp() * (log_p - m.log())).sum(-1)
        kl_qm = (log_q.exp() * (log_q - m.log())).sum(-1)
        expected = (0.5 * (kl_pm + kl_qm)).mean()
    criterion = OutputDivergence(reference_logits(model, batches), divergence)
    assert masked_score(model, batches, criterion, removed) == pytest.approx(expected.item(), rel=1e-4)


def test_select_and_physical_result():
    model = make_tiny_model("llama3", num_hidden_layers=4, initializer_range=0.3)
    calibration = _calibration(model)
    method, config, scores = _score(model, calibration)
    assert len(scores.meta["order"]) == 8  # the official loop runs to the end
    plan = method.select(scores, model, 0.25, config)
    assert plan_decoder_ratio(get_adapter(model), plan) >= 0.25
    check_physical(model, plan, calibration)


def test_bad_inputs_fail_before_any_search(tiny_tokenizer, tiny_text):
    model = make_tiny_model("llama3", num_hidden_layers=4)
    method = get_method("finercut")
    with pytest.raises(PrunebenchError, match="fewer than the 8 removals"):
        method.check_ratio(model, 0.1, method.config({"exclude": 0.9}))
    with pytest.raises(PrunebenchError, match="more removals than allowed"):
        method.check_ratio(model, 0.3, method.config({"max_steps": 1}))
    with pytest.raises(PrunebenchError, match="at least 2 tokens"):
        method.score(model, torch.zeros(3, 1, dtype=torch.long), method.config())
    with pytest.raises(PrunebenchError, match=r"nsamples x seqlen = 100 x 256 needs at least 25600"):
        leading_rows(tiny_tokenizer, tiny_text.splitlines(), 100, 256)
    with pytest.raises(PrunebenchError, match="divergence"):
        method.config({"divergence": "kl"})


def test_leading_rows_and_cli_prune(tmp_path, tiny_tokenizer, tiny_text):
    lines = ["a first line\n", "", "second line\n"]
    rows = leading_rows(tiny_tokenizer, lines, 1, 3)
    assert torch.equal(rows[0], torch.tensor(tiny_tokenizer("a first line\n second line\n")["input_ids"][:3]))
    model = make_tiny_model("llama3", vocab_size=len(tiny_tokenizer), initializer_range=0.3)
    save_pretrained(model, tmp_path / "base", tokenizer=tiny_tokenizer)
    (tmp_path / "calib.txt").write_text(tiny_text)
    args = ["prune", "--model", str(tmp_path / "base"), "--method", "finercut", "--ratio", "0.2"]
    opts = ["--calib", str(tmp_path / "calib.txt"), "--nsamples", "4", "--seqlen", "16"]
    assert main([*args, *opts, "--out", str(tmp_path / "p")]) == 0
    pruned, _ = load_pretrained(tmp_path / "p")
    assert decoder_params(pruned) <= 0.8 * decoder_params(model)


def test_fast_search_matches_naive_for_every_family(family):
    model = make_tiny_model(family, num_hidden_layers=3, initializer_range=0.3)
    batches = calibration_batches(
        torch.randint(3, 96, (2, 12), generator=torch.Generator().manual_seed(1)), 1, "t"
    )
    criterion = OutputDivergence(reference_logits(model, batches), "js_code")
    schedule = ExclusionSchedule.build(3, "am", 0.0)
    fast = greedy_search(model, batches, criterion, schedule.candidates, 6, "t", progress=False)
    naive = reference_search(model, batches, criterion, schedule.candidates, 6)
    assert fast.order == naive.order and fast.scores == naive.scores
