"""BlockPruner: greedy sublayer search by calibration perplexity, exact fast search, physical result."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model
from greedy_helpers import check_physical, model_with_identity, own_samples

from prunebench.cli import main
from prunebench.errors import PrunebenchError
from prunebench.methods import Scores, get_method
from prunebench.methods.blockpruner import CalibrationPerplexity, candidate_list, example_rows, text_examples
from prunebench.methods.greedy_method import calibration_batches
from prunebench.methods.greedy_reference import masked_score, reference_search
from prunebench.methods.greedy_search import DecoderRunner, PrefixCache, cache_strides, greedy_search
from prunebench.methods.removal_order import Removal, removal_params
from prunebench.models import get_adapter, load_pretrained, save_pretrained
from prunebench.models.counting import decoder_params, plan_decoder_ratio


def _score(model, calibration, **params):
    method = get_method("blockpruner")
    config = method.config({"batch_size": 4, **params})
    return method, config, method.score(model, calibration, config)


def test_identity_sublayer_is_removed_first_at_dense_perplexity():
    model = model_with_identity(attn=(2,))
    calibration = own_samples(model)
    _, _, scores = _score(model, calibration, max_steps=2)
    assert scores.meta["order"][0] == [2, "attn"]
    batches = calibration_batches(calibration, 4, "t")
    dense = masked_score(model, batches, CalibrationPerplexity(batches, 0), frozenset())
    assert scores.meta["step_scores"][0] == dense


def test_identity_mlp_first_in_mlp_mode_and_modes_restrict_candidates():
    model = model_with_identity(mlp=(1,))
    _, _, scores = _score(model, own_samples(model), block_type="mlp", max_steps=0)
    assert scores.meta["order"][0] == [1, "mlp"]
    assert sorted(scores.meta["order"]) == [[i, "mlp"] for i in range(4)]  # mode mlp: MLP blocks only
    assert len(candidate_list(4, "mha")([])) == 4 and len(candidate_list(4, "mix")([])) == 8


@pytest.mark.parametrize(
    ("attn", "mlp", "expected"),
    [
        ((3,), (1,), [[3, "attn"], [1, "mlp"]]),  # all MHA blocks come before any MLP block in the list
        ((1, 3), (), [[1, "attn"], [3, "attn"]]),
    ],
)
def test_ties_go_to_the_first_candidate_of_the_official_list(attn, mlp, expected):
    model = model_with_identity(attn=attn, mlp=mlp)
    _, _, scores = _score(model, own_samples(model), max_steps=2)
    assert scores.meta["order"] == expected
    assert scores.meta["step_scores"][0] == scores.meta["step_scores"][1]  # a real tie


STATE_BYTES = 8 * 24 * 32 * 4  # one hidden state of the whole calibration set (8 rows x 24 tokens x 32, fp32)


@pytest.mark.parametrize(
    ("batch_size", "cache_gb", "strides", "refreshes"),
    [
        (4, 8.0, (1, 1), 1),  # everything cached: after the first fill the prefix adopts the winners
        (3, 21 * STATE_BYTES / 2**30, (1, 2), 9),  # full prefix cache (9 states), memo every 2nd layer
        (3, 0.0, (4, 0), 9),  # no cache: every candidate starts at the embeddings
    ],
)
def test_fast_search_returns_the_naive_order(monkeypatch, batch_size, cache_gb, strides, refreshes):
    model = make_tiny_model("llama3", num_hidden_layers=4, initializer_range=0.3)
    calibration = own_samples(model)
    batches = calibration_batches(calibration, batch_size, "t")
    assert cache_strides(DecoderRunner(model, batches), cache_gb, 8) == strides
    calls = []
    refresh = PrefixCache.refresh
    monkeypatch.setattr(PrefixCache, "refresh", lambda self, *a: calls.append(a) or refresh(self, *a))
    criterion = CalibrationPerplexity(batches, 0)
    fast = greedy_search(
        model, batches, criterion, candidate_list(4, "mix"), 8, "t", cache_gb, progress=False
    )
    naive = reference_search(model, batches, criterion, candidate_list(4, "mix"), 8)
    assert fast.order == naive.order and fast.scores == naive.scores
    assert len(set(fast.order)) == 8
    assert len(calls) == refreshes


def test_select_takes_the_shortest_prefix_and_prunes_physically():
    model = make_tiny_model("llama3", num_hidden_layers=4, initializer_range=0.3)
    calibration = own_samples(model)
    method, config, scores = _score(model, calibration)
    adapter = get_adapter(model)
    plan = method.select(scores, model, 0.3, config)
    steps = plan.notes["native"]["steps"]
    order = [Removal.from_json(r) for r in scores.meta["order"]]
    assert plan_decoder_ratio(adapter, plan) >= 0.3
    assert sum(removal_params(adapter, r) for r in order[: steps - 1]) / decoder_params(model) < 0.3
    assert plan.notes["removed_in_order"] == scores.meta["order"][:steps]
    pruned = check_physical(model, plan, calibration[:2, :12])
    # The pruned model's calibration perplexity is the search's score at that prefix.
    batches = calibration_batches(calibration, 4, "t")
    assert masked_score(pruned, batches, CalibrationPerplexity(batches, 0), frozenset()) == pytest.approx(
        scores.meta["step_scores"][steps - 1], rel=1e-5
    )


def test_bad_inputs_fail_before_any_search():
    model = make_tiny_model("llama3", num_hidden_layers=4)
    method = get_method("blockpruner")
    with pytest.raises(PrunebenchError, match="more removals than allowed"):
        method.check_ratio(model, 0.6, method.config({"block_type": "mha"}))  # attention is < 60%
    with pytest.raises(PrunebenchError, match="more removals than allowed"):
        method.check_ratio(model, 0.3, method.config({"max_steps": 1}))
    with pytest.raises(PrunebenchError, match="at least one row"):
        method.score(model, torch.zeros(0, 16, dtype=torch.long), method.config())
    with pytest.raises(PrunebenchError, match="block_type"):
        method.config({"block_type": "attn"})


def test_official_calibration_rows(tiny_tokenizer, tiny_text):
    examples = text_examples(tiny_text.replace(". ", ".\n\n"))
    rows = example_rows(tiny_tokenizer, examples, 6, 16, seed=42)
    picked = __import__("random").Random(42).sample(range(len(examples)), 6)
    joined = torch.tensor(tiny_tokenizer("\n\n".join(examples[i] for i in picked))["input_ids"])
    assert rows.shape[1] == 16 and rows.shape[0] == joined.numel() // 16
    assert torch.equal(rows.flatten(), joined[: rows.numel()])
    with pytest.raises(PrunebenchError, match="one row of seqlen=4096 tokens needs at least 4096"):
        example_rows(tiny_tokenizer, examples, 1, 4096, seed=42)


def test_cli_score_then_prune(tmp_path, tiny_tokenizer, tiny_text):
    model = make_tiny_model("llama3", vocab_size=len(tiny_tokenizer), initializer_range=0.3)
    save_pretrained(model, tmp_path / "base", tokenizer=tiny_tokenizer)
    (tmp_path / "calib.txt").write_text(tiny_text.replace(". ", ".\n\n"))
    common = ["--model", str(tmp_path / "base"), "--method", "blockpruner"]
    opts = ["--nsamples", "8", "--seqlen", "16", "--param", "max_steps=4"]
    assert (
        main(["score", *common, "--calib", str(tmp_path / "calib.txt"), *opts, "--out", str(tmp_path / "s")])
        == 0
    )
    scores = Scores.load(tmp_path / "s")
    assert len(scores.meta["order"]) == 4 and scores.meta["calibration"]["shape"][1] == 16
    args = ["prune", *common, "--ratio", "0.1", "--scores", str(tmp_path / "s"), "--param", "max_steps=4"]
    assert main([*args, "--out", str(tmp_path / "p")]) == 0
    pruned, _ = load_pretrained(tmp_path / "p")
    assert decoder_params(pruned) <= 0.9 * decoder_params(model)
    assert (
        main([*args[:-4], "--ratio", "0.9", "--scores", str(tmp_path / "s"), "--out", str(tmp_path / "q")])
        == 2
    )
    assert not (tmp_path / "q").exists()


def test_perplexity_ignores_pad_labels_only_when_pad_id_is_truthy():
    ids = torch.tensor([[4, 5, 7, 5, 9, 6]])
    logits = torch.randn(1, 6, 12, generator=torch.Generator().manual_seed(0))
    nll = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="none")
    keep = ids[0, 1:] != 5
    assert CalibrationPerplexity([ids], 5).row_values(logits, 0)[0] == pytest.approx(nll[keep].mean().item())
    assert CalibrationPerplexity([ids], 0).row_values(logits, 0)[0] == pytest.approx(nll.mean().item())


@pytest.mark.parametrize("name", ["blockpruner", "finercut", "sleb"])
def test_max_ratio_stops_the_search_at_the_prefix_every_smaller_ratio_uses(name):
    model = make_tiny_model("llama3", num_hidden_layers=6, initializer_range=0.3)
    calibration = own_samples(model)
    method = get_method(name)
    full_config = method.config(
        {"batch_size": 4, "exclude": 0.0} if name == "finercut" else {"batch_size": 4}
    )
    stopped_config = method.config({**full_config.to_dict(), "max_ratio": 0.3})
    full = method.score(model, calibration, full_config)
    stopped = method.score(model, calibration, stopped_config)
    order = stopped.meta["order"]
    assert order == full.meta["order"][: len(order)]
    adapter = get_adapter(model)
    removed = [sum(removal_params(adapter, Removal.from_json(r)) for r in order[:k]) for k in (-1, None)]
    assert removed[0] < 0.3 * decoder_params(model) <= removed[1]  # it stopped at the first step reaching 0.3
    for ratio in (0.1, 0.3):
        assert method.select(stopped, model, ratio, stopped_config).layers == (
            method.select(full, model, ratio, full_config).layers
        )
    with pytest.raises(
        PrunebenchError, match=rf"{name}: ratio 0.35 is beyond max_ratio 0.3, where the search stops"
    ):
        method.check_ratio(model, 0.35, stopped_config)
    with pytest.raises(PrunebenchError, match=r"max_ratio must be in \[0, 1\)"):
        method.config({"max_ratio": 1.0})
