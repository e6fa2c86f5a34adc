"""Integrity of inputs (issue 16, items 4-8): non-finite weights, scores and metrics; plans and scores
made for another model; lengths beyond the context; instruction data cut to nothing; plans that
would remove every decoder sublayer. Each bad input is one clear error before the work it would spoil."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from conftest import SAMPLE_TEXT, make_tiny_model

from prunebench.cli import main
from prunebench.errors import PrunebenchError
from prunebench.methods import Scores, available_methods, get_method
from prunebench.methods.base import max_ratio_keeping_a_sublayer
from prunebench.methods.removal_order import Removal, plan_from_order
from prunebench.models import get_adapter, load_pretrained, save_pretrained
from prunebench.models.checkpoint import load_skeleton
from prunebench.models.context import check_context, context_length
from prunebench.models.counting import decoder_params
from prunebench.models.integrity import (
    check_finite_weights,
    check_same_model,
    dense_shapes,
    fingerprint,
    sample_positions,
)
from prunebench.plan import PruningPlan

REPO = Path(__file__).resolve().parents[1]


def _save(path, tokenizer, **overrides):
    model = make_tiny_model("llama3", vocab_size=len(tokenizer), **overrides)
    save_pretrained(model, path, tokenizer=tokenizer)
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_tokenizer):
    """The base model, a twin (same shapes, other weights), one with another head layout, a bigger one."""
    root = tmp_path_factory.mktemp("models")
    return {
        "base": _save(root / "base", tiny_tokenizer),
        "twin": _save(root / "twin", tiny_tokenizer, seed=1),
        "mha": _save(root / "mha", tiny_tokenizer, num_key_value_heads=4),
        "big": _save(root / "big", tiny_tokenizer, num_hidden_layers=6, intermediate_size=64),
    }


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "calib.txt"
    path.write_text(SAMPLE_TEXT)
    return str(path)


def _fails(argv, capsys, message, out=None):
    """``prunebench argv`` exits 2 with one line containing ``message`` and writes no ``out``."""
    capsys.readouterr()  # what earlier steps of the test printed
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("prunebench: error:"), err
    assert message in err[0], err[0]
    if out is not None:
        assert not out.exists()


@pytest.fixture
def no_weights(monkeypatch):
    """Loading any weights fails the test: the error must come from the config or file alone."""

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded despite bad input")

    # The eval commands import load_pretrained from prunebench.models when they run.
    for module in ("prunebench.steps", "prunebench.recovery.run", "prunebench.models"):
        monkeypatch.setattr(f"{module}.load_pretrained", refuse)


# --- 4. Non-finite weights, scores and metrics --------------------------------------------------------


@pytest.mark.parametrize(
    ("tensor", "value"),
    [("model.layers.1.mlp.down_proj.weight", math.nan), ("model.norm.weight", math.inf)],
)
def test_non_finite_weight_is_refused_on_load_naming_the_tensor(tmp_path, tiny_tokenizer, tensor, value):
    model = make_tiny_model("llama3", vocab_size=len(tiny_tokenizer))
    with torch.no_grad():
        model.get_parameter(tensor).view(-1)[3] = value
    save_pretrained(model, tmp_path / "m", tokenizer=tiny_tokenizer)
    kind = "1 NaN, 0 inf" if math.isnan(value) else "0 NaN, 1 inf"
    with pytest.raises(PrunebenchError, match=rf"weight {tensor} .* \({kind}\)"):
        load_pretrained(tmp_path / "m")


def test_every_command_refuses_a_non_finite_checkpoint(tmp_path, tiny_tokenizer, calib, capsys):
    model = make_tiny_model("llama3", vocab_size=len(tiny_tokenizer))
    with torch.no_grad():
        model.model.layers[2].self_attn.k_proj.weight[0, 0] = math.nan
    save_pretrained(model, tmp_path / "nan", tokenizer=tiny_tokenizer)
    m = ["--model", str(tmp_path / "nan")]
    out = tmp_path / "o"
    message = "weight model.layers.2.self_attn.k_proj.weight (16, 32) holds non-finite values (1 NaN, 0 inf)"
    for argv in (
        ["prune", *m, "--method", "magnitude-sp", "--ratio", "0.3"],
        ["score", *m, "--method", "shortgpt", "--calib", calib, "--nsamples", "2", "--seqlen", "16"],
        ["eval", "ppl", *m, "--text", calib, "--seqlen", "16"],
        ["eval", "latency", *m, "--prompt-lengths", "4", "--new-tokens", "2"],
    ):
        _fails([*argv, "--out", str(out)], capsys, message, out)


def test_buffers_are_checked_as_well():
    model = make_tiny_model("llama3")
    check_finite_weights(model, "m")  # a finite model passes
    model.model.rotary_emb.inv_freq[0] = math.inf
    with pytest.raises(PrunebenchError, match=r"weight model\.rotary_emb\.inv_freq"):
        check_finite_weights(model, "m")


def test_non_finite_scores_are_never_saved_nor_used(tmp_path):
    scores = Scores(
        {"attn_score": torch.tensor([1.0, math.nan]), "ids": torch.tensor([1, 2])}, {"method": "x"}
    )
    with pytest.raises(PrunebenchError, match=r"score tensor 'attn_score' holds non-finite values \(1 NaN"):
        scores.save(tmp_path / "s")
    assert not (tmp_path / "s" / "scores.json").exists()
    Scores({"attn_score": torch.tensor([1.0, 2.0])}, {"method": "x"}).save(tmp_path / "s")
    from safetensors.torch import save_file

    save_file({"attn_score": torch.tensor([math.inf, 2.0])}, str(tmp_path / "s" / "scores.safetensors"))
    with pytest.raises(PrunebenchError, match=r"scores in .*: score tensor 'attn_score' .*\(0 NaN, 1 inf\)"):
        Scores.load(tmp_path / "s")


def test_non_finite_outputs_give_no_perplexity_and_no_accuracy(tiny_tokenizer, tiny_text):
    from prunebench.evaluation.perplexity import perplexity
    from prunebench.evaluation.zeroshot import finite_logits, tidy_rows

    model = make_tiny_model("llama3", vocab_size=len(tiny_tokenizer))
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] = math.nan  # in memory: the load check is bypassed
    with pytest.raises(PrunebenchError, match="mean token NLL is nan"):
        perplexity(model, tiny_tokenizer, tiny_text, 16, max_windows=2, progress=False)
    ids = torch.arange(3, 11).view(1, 8)
    with finite_logits(model), pytest.raises(PrunebenchError, match="logits hold NaN or inf"):
        model(ids)
    model(ids)  # outside the block nothing is checked
    results = {"results": {"t": {"acc,none": 0.5, "acc_stderr,none": math.nan}}}
    assert tidy_rows(results)[0]["stderr"] is None  # an undefined stderr is no number
    with pytest.raises(PrunebenchError, match="t acc = nan"):
        tidy_rows({"results": {"t": {"acc,none": math.nan}}})


def test_a_non_finite_metric_file_is_never_a_table_row(tmp_path, monkeypatch, models):
    from prunebench.report.tables import collect

    monkeypatch.chdir(tmp_path)
    evals = tmp_path / "results" / "s" / "m" / "dense" / "r0.00" / "none" / "eval"
    evals.mkdir(parents=True)
    (evals / "ppl_demo_16.json").write_text('{"ppl": NaN, "seqlen": 16, "tokens": 10}')
    config = {
        "study": "s",
        "models": {"m": {"path": models["base"], "device": "cpu", "dtype": "float32"}},
        "methods": {},
        "ratios": [],
        "recovery": {"none": {}},
    }
    with pytest.raises(PrunebenchError, match="ppl ppl is nan; a metric must be finite"):
        collect(config)


# --- 5. Plans and scores made for another model -------------------------------------------------------


def test_fingerprint_is_deterministic_and_tells_models_apart(models):
    base, _ = load_pretrained(models["base"])
    again, _ = load_pretrained(models["base"])
    twin, _ = load_pretrained(models["twin"])
    half, _ = load_pretrained(models["base"], dtype=torch.bfloat16)
    assert fingerprint(base) == fingerprint(again) and fingerprint(base)["dtype"] == "float32"
    assert fingerprint(twin)["sha256"] != fingerprint(base)["sha256"]
    assert dense_shapes(twin) == dense_shapes(base) == dense_shapes(load_skeleton(models["base"]))
    # Another dtype rounds the values differently: such fingerprints are not compared.
    check_same_model(None, fingerprint(half), None, fingerprint(base), "x")
    with pytest.raises(PrunebenchError, match="x: made for a model with other weights"):
        check_same_model(None, fingerprint(twin), None, fingerprint(base), "x")


@pytest.mark.parametrize(("method", "calibrated"), [("magnitude-sp", False), ("shortgpt", True)])
def test_scores_of_another_model_are_refused_before_selection(
    tmp_path, models, calib, capsys, method, calibrated
):
    opts = ["--calib", calib, "--nsamples", "2", "--seqlen", "16"] if calibrated else []
    scores = tmp_path / "s"
    assert main(["score", "--model", models["base"], "--method", method, *opts, "--out", str(scores)]) == 0
    meta = json.loads((scores / "scores.json").read_text())
    assert meta["base_shapes"]["num_kv_heads"] == 2 and len(meta["base_fingerprint"]["sha256"]) == 64
    prune = ["prune", "--method", method, "--ratio", "0.3", "--scores", str(scores), "--out"]
    _fails([*prune, str(tmp_path / "o"), "--model", models["mha"]], capsys, "num_kv_heads 2 vs 4")
    _fails([*prune, str(tmp_path / "o"), "--model", models["big"]], capsys, "num_layers 4 vs 6")
    _fails(
        [*prune, str(tmp_path / "o"), "--model", models["twin"]],
        capsys,
        "made for a model with other weights",
    )
    assert not (tmp_path / "o").exists()
    assert main([*prune, str(tmp_path / "ok"), "--model", models["base"]]) == 0
    # Scores written before shapes were recorded are still usable on a model they fit.
    (scores / "scores.json").write_text(
        json.dumps({k: v for k, v in meta.items() if k not in ("base_shapes", "base_fingerprint")})
    )
    assert main([*prune, str(tmp_path / "old"), "--model", models["base"]]) == 0


def test_scores_shapes_are_checked_before_the_weights_are_loaded(tmp_path, models, capsys, no_weights):
    Scores({}, {"method": "magnitude-sp", "base_shapes": {"family": "llama", "num_layers": 9}}).save(
        tmp_path / "s"
    )
    argv = ["prune", "--model", models["base"], "--method", "magnitude-sp", "--ratio", "0.3"]
    _fails(
        [*argv, "--scores", str(tmp_path / "s"), "--out", str(tmp_path / "o")], capsys, "num_layers 9 vs 4"
    )


def test_plans_record_the_dense_model_and_are_refused_on_another(tmp_path, models, capsys):
    assert (
        main(
            [
                "prune",
                "--model",
                models["base"],
                "--method",
                "magnitude-sp",
                "--ratio",
                "0.3",
                "--out",
                str(tmp_path / "p"),
            ]
        )
        == 0
    )
    plan_path = tmp_path / "p" / "plan.json"
    plan = PruningPlan.load(plan_path)
    assert plan.base_shapes == dense_shapes(load_skeleton(models["base"]))
    assert plan.base_fingerprint["sha256"] == fingerprint(load_pretrained(models["base"])[0])["sha256"]
    apply = ["apply", "--plan", str(plan_path), "--out", str(tmp_path / "o"), "--model"]
    _fails(
        [*apply, models["big"]], capsys, "plan.json: made for another model (num_layers 4 vs 6, intermediate"
    )
    _fails([*apply, models["twin"]], capsys, "made for a model with other weights")
    assert main([*apply, models["base"]]) == 0


def test_old_plans_without_the_fields_still_load_and_their_counts_are_checked(tmp_path, models, capsys):
    doc = {
        "format": "prunebench-plan/1",
        "base_model": "m",
        "method": "manual",
        "target_ratio": 0.25,
        "layers": {"1": {"kv_heads": [0], "mlp_channels": list(range(24))}},
    }
    (tmp_path / "fresh.json").write_text(json.dumps(doc))
    apply = ["apply", "--plan", str(tmp_path / "fresh.json"), "--out", str(tmp_path / "a"), "--model"]
    assert main([*apply, models["base"]]) == 0  # no fields, never applied: indices only
    applied = json.loads((tmp_path / "a" / "plan.json").read_text())
    old = {k: v for k, v in applied.items() if k not in ("base_shapes", "base_fingerprint")}
    (tmp_path / "old.json").write_text(json.dumps(old))
    apply = ["apply", "--plan", str(tmp_path / "old.json"), "--out", str(tmp_path / "b"), "--model"]
    _fails([*apply, models["big"]], capsys, f"it left {old['achieved']['decoder_params']} decoder parameters")
    assert main([*apply, models["base"]]) == 0


def test_an_achieved_ratio_far_from_the_target_is_a_warning_in_log_and_plan(tmp_path, models, capsys):
    doc = {
        "format": "prunebench-plan/1",
        "base_model": "m",
        "method": "manual",
        "target_ratio": 0.3,
        "layers": {"1": {"mlp_channels": list(range(24))}},
    }
    (tmp_path / "far.json").write_text(json.dumps(doc))
    assert (
        main(
            [
                "apply",
                "--model",
                models["base"],
                "--plan",
                str(tmp_path / "far.json"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 0
    )
    achieved = PruningPlan.load(tmp_path / "o" / "plan.json").achieved["decoder_ratio"]
    warning = f"achieved decoder ratio {achieved:.4f} is {0.3 - achieved:.4f} below the target 0.3 (manual)"
    assert f"prunebench: warning: {warning}" in capsys.readouterr().err
    assert PruningPlan.load(tmp_path / "o" / "plan.json").notes["warnings"] == [warning]
    doc["target_ratio"] = round(achieved, 2)
    (tmp_path / "near.json").write_text(json.dumps(doc))
    assert (
        main(
            [
                "apply",
                "--model",
                models["base"],
                "--plan",
                str(tmp_path / "near.json"),
                "--out",
                str(tmp_path / "n"),
            ]
        )
        == 0
    )
    assert "warning" not in capsys.readouterr().err
    assert "warnings" not in PruningPlan.load(tmp_path / "n" / "plan.json").notes


def test_cfsp_lora_refuses_scores_of_another_dense_model(tmp_path, models):
    from prunebench.recovery.cfsp_lora import importance_from_scores

    skeleton = load_skeleton(models["base"])
    plan = PruningPlan("m", "cfsp", {}, 0.1, {}, base_shapes=dense_shapes(skeleton))
    plan.save(tmp_path / "plan.json")
    other = {**dense_shapes(skeleton), "intermediate_size": 64}
    Scores({"angular_distance": torch.ones(4)}, {"base_shapes": other}).save(tmp_path / "s")
    with pytest.raises(PrunebenchError, match="made for another model \\(intermediate_size 64 vs 48"):
        importance_from_scores(str(tmp_path / "s"), str(tmp_path), 4, "angular_distance")


# --- 6. Lengths beyond the model's context -----------------------------------------------------------


def test_one_context_check_for_models_configs_and_paths(models):
    model = make_tiny_model("llama3")
    for source in (model, model.config, models["base"]):
        assert context_length(source) == 128
        check_context(source, 128, "x")
    with pytest.raises(PrunebenchError) as error:
        check_context(models["base"], 129, "recovery seqlen")
    assert str(error.value) == (
        f"recovery seqlen 129 exceeds the model's context of 128 tokens (max_position_embeddings of {models['base']})"
    )
    with pytest.raises(PrunebenchError, match=r"context of 128 tokens \(max_position_embeddings\)$"):
        check_context(model, 129, "recovery seqlen")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["score", "--method", "shortgpt", "--calib", "{calib}", "--seqlen", "4096"],
            "calibration seqlen 4096",
        ),
        (
            ["prune", "--method", "shortgpt", "--ratio", "0.3", "--calib", "{calib}", "--seqlen", "4096"],
            "calibration seqlen 4096",
        ),
        (["score", "--method", "flap", "--samples", "{samples}"], "calibration seqlen 200"),
        (
            ["recover", "--variant", "lora", "--data", "{calib}", "--steps", "1", "--seqlen", "4096"],
            "recovery seqlen 4096",
        ),
        (["eval", "ppl", "--text", "{calib}", "--seqlen", "4096"], "perplexity seqlen 4096"),
        (
            ["eval", "latency", "--prompt-lengths", "8,120", "--new-tokens", "16"],
            "prompt length 120 + 16 new tokens = 136",
        ),
    ],
)
def test_every_length_is_checked_against_the_context_before_loading(
    tmp_path, models, calib, capsys, no_weights, argv, message
):
    from prunebench.data import save_samples

    save_samples(torch.zeros(2, 200, dtype=torch.long), tmp_path / "samples.safetensors")
    argv = [a.format(calib=calib, samples=tmp_path / "samples.safetensors") for a in argv]
    out = tmp_path / "o"
    _fails([*argv, "--model", models["base"], "--out", str(out)], capsys, f"{message} exceeds", out)


def test_the_base_model_of_a_latency_run_is_checked_too(tmp_path, tiny_tokenizer, models, capsys, no_weights):
    short = _save(tmp_path / "short", tiny_tokenizer, max_position_embeddings=32)
    argv = ["eval", "latency", "--model", models["base"], "--base-model", short, "--prompt-lengths", "20"]
    message = "base model: prompt length 20 + 16 new tokens = 36 exceeds the model's context of 32 tokens"
    _fails([*argv, "--new-tokens", "16", "--out", str(tmp_path / "o")], capsys, message)


def test_shared_calibration_checks_its_length_first(models, no_weights):
    from prunebench.steps import make_calibration

    with pytest.raises(PrunebenchError, match="calibration seqlen 4096 exceeds the model's context of 128"):
        make_calibration(models["base"], "unused", 2, 4096, 0)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"calibration": {"seqlen": 4096}}, "config.calibration.seqlen 4096"),
        (
            {"recovery": {"none": {}, "lora": {"steps": 2, "seqlen": 1024}}},
            "config.recovery.lora.seqlen 1024",
        ),
        ({"evaluation": {"ppl": {"seqlens": [32, 600]}}}, "config.evaluation.ppl.seqlens 600"),
        (
            {"evaluation": {"latency": {"prompt_lengths": [500], "new_tokens": 16}}},
            "config.evaluation.latency: longest prompt + new_tokens = 516",
        ),
        (
            {"calibration": {"mode": "paper"}, "methods": {"shortgpt": {}}},
            "config.methods.shortgpt calibration seqlen 2048",
        ),
    ],
)
def test_a_study_checks_every_length_before_any_job(change, key, monkeypatch):
    import yaml

    from prunebench.study import validate_config

    monkeypatch.chdir(REPO)
    config = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    for section, value in change.items():
        config[section] = (
            value if section in ("methods", "recovery") else {**config.get(section, {}), **value}
        )
    with pytest.raises(
        PrunebenchError, match=f"^invalid config: {re.escape(key)} exceeds the model's context of 512 tokens"
    ):
        validate_config(config)


# --- 7. Data problems are reported as data problems ---------------------------------------------------

SHORT = {"instruction": "the cat sees", "input": "", "output": "the ball ."}
LONG = {"instruction": " ".join(["the old man follows a small boat"] * 6), "input": "", "output": "a tree ."}


def test_instruction_records_cut_to_no_response_token(tmp_path, capsys):
    from recovery_fixtures import make_tokenizer

    from prunebench.recovery.data import alpaca_prompt, has_target, prepare_data

    tokenizer = make_tokenizer()
    short, long = (len(tokenizer(alpaca_prompt(r))["input_ids"]) for r in (SHORT, LONG))
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [SHORT] * 12 + [LONG] * 8))
    with pytest.raises(PrunebenchError) as error:
        prepare_data(str(path), tokenizer, short, seed=0, n_val=0)  # the prompt fills every sequence
    assert str(error.value) == (
        f"--seqlen {short} cuts away the whole response of all 20 training records of {str(path)!r}: the "
        f"Alpaca prompt alone takes {short} to {long} tokens; use --seqlen {short + 1} or more (the recovery seqlen)"
    )
    train, val = prepare_data(str(path), tokenizer, short + 4, seed=0, n_val=2)
    assert train.dropped == 8 and len(train) + (len(val) if val else 0) == 12
    assert all(has_target(e) for e in train.examples + (val.examples if val else []))
    assert f"prunebench: warning: 8 of 20 instruction records of {str(path)!r} have no response token" in (
        capsys.readouterr().err
    )
    train, _ = prepare_data(str(path), tokenizer, long + 4, seed=0, n_val=0)
    assert train.dropped == 0 and len(train) == 20


def test_recovery_names_seqlen_not_the_lr_and_counts_what_it_dropped(tmp_path, capsys, monkeypatch):
    from recovery_fixtures import one_thread, write_model

    from prunebench.recovery.training import Checkpointer

    model = write_model(str(tmp_path / "model"))
    all_cut, mixed = tmp_path / "cut.jsonl", tmp_path / "mixed.jsonl"
    all_cut.write_text("".join(json.dumps(LONG) + "\n" for _ in range(10)))
    mixed.write_text("".join(json.dumps(r) + "\n" for r in [SHORT] * 10 + [LONG] * 3))
    argv = ["recover", "--model", model, "--variant", "lora", "--steps", "2", "--batch-size", "2"]
    argv += ["--seqlen", "48", "--no-progress", "--val-batches", "0"]
    real_load = Checkpointer.load
    monkeypatch.setattr(Checkpointer, "load", lambda *a: pytest.fail("training started despite bad data"))
    _fails([*argv, "--data", str(all_cut), "--out", str(tmp_path / "o")], capsys, "--seqlen 48 cuts away")
    monkeypatch.setattr(Checkpointer, "load", real_load)
    with one_thread():
        assert main([*argv, "--data", str(mixed), "--out", str(tmp_path / "m")]) == 0
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert summary["data"]["dropped_records"] == {str(mixed): 3}
    assert "3 of 13 instruction records" in capsys.readouterr().err


def test_a_non_finite_loss_is_explained_by_what_caused_it():
    from prunebench.recovery.training import nonfinite_loss_message

    model = make_tiny_model("llama3")
    batch = {"labels": torch.tensor([[-100, 5, 6]])}
    assert nonfinite_loss_message(model, batch, math.nan, 1).endswith(
        "the forward pass overflows (try float32 weights)"
    )
    assert nonfinite_loss_message(model, batch, math.nan, 4).endswith("with finite weights; lower the lr")
    masked = {"labels": torch.tensor([[5, -100, -100]])}
    assert "the batch has no target token" in nonfinite_loss_message(model, masked, math.nan, 2)
    with torch.no_grad():
        model.model.layers[1].mlp.gate_proj.weight[0, 0] = math.inf
    at_start = nonfinite_loss_message(model, batch, math.nan, 1)
    assert "weight model.layers.1.mlp.gate_proj.weight holds non-finite values before any update" in at_start
    assert "lr" not in at_start
    assert "became non-finite after 6 optimizer steps (training diverged" in nonfinite_loss_message(
        model, batch, math.inf, 7
    )


# --- 8. Plans that would remove every decoder sublayer ------------------------------------------------


def test_a_plan_removing_every_sublayer_is_refused_before_loading(tmp_path, models, capsys, no_weights):
    doc = {
        "format": "prunebench-plan/1",
        "base_model": "m",
        "method": "manual",
        "target_ratio": 0.5,
        "layers": {str(i): {"kv_heads": [], "mlp_channels": []} for i in range(4)},
    }
    (tmp_path / "all.json").write_text(json.dumps(doc))
    argv = [
        "apply",
        "--model",
        models["base"],
        "--plan",
        str(tmp_path / "all.json"),
        "--out",
        str(tmp_path / "o"),
    ]
    _fails(argv, capsys, "the plan removes every decoder sublayer of the 4-layer model (target ratio 0.5)")
    doc["layers"]["3"] = {"kv_heads": []}  # one MLP sublayer stays: a (tiny) model
    PruningPlan.from_json(doc).validate(get_adapter(load_skeleton(models["base"])))


@pytest.mark.parametrize("method", sorted(available_methods()))
def test_every_method_refuses_a_target_leaving_no_sublayer_before_scoring(models, method):
    skeleton = load_skeleton(models["base"])
    most = max_ratio_keeping_a_sublayer(get_adapter(skeleton))
    # One MLP channel (3 x 32 weights) with its norm (32) is the smallest part that can stay.
    assert most == pytest.approx(1 - 128 / decoder_params(skeleton))
    instance = get_method(method)
    with pytest.raises(PrunebenchError, match=f"ratio {most + 1e-4} would leave no decoder sublayer"):
        instance.check_ratio(skeleton, most + 1e-4, instance.config())


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("blockpruner", {}),
        ("finercut", {"exclude": 0.0}),
        ("sleb", {"early_barrier": 0, "latter_barrier": 0}),
    ],
)
def test_greedy_searches_never_count_the_last_sublayer_as_removable(models, method, params):
    skeleton = load_skeleton(models["base"])
    instance = get_method(method)
    with pytest.raises(PrunebenchError, match="more removals than allowed"):
        instance.check_ratio(skeleton, 0.99, instance.config(params))


def test_an_order_covering_every_sublayer_never_yields_an_empty_plan():
    adapter = get_adapter(make_tiny_model("llama3"))
    order = [Removal(i, part) for part in ("attn", "mlp") for i in range(4)]
    plan = plan_from_order(adapter, order, 0.7, "m", {}, "b")
    assert len(plan.removed_sublayers()) < 8
    with pytest.raises(PrunebenchError, match=r"all 7 allowed steps \(one sublayer must stay\)"):
        plan_from_order(adapter, order, 0.99, "m", {}, "b")


@pytest.mark.parametrize(("ratio", "budget"), [(0.995, "decoder"), (0.995, "native")])
def test_flap_near_the_limit_keeps_a_structure_and_prunes_physically(ratio, budget):
    from prunebench.models import apply_plan

    model = make_tiny_model("llama3")
    flap = get_method("flap")
    config = flap.config({"budget": budget, "batch_size": 4})
    scores = flap.score(
        model, torch.randint(3, 96, (4, 12), generator=torch.Generator().manual_seed(0)), config
    )
    plan = flap.select(scores, model, ratio, config)
    plan.validate(get_adapter(model))  # at least one sublayer stays
    pruned = apply_plan(model, plan)
    assert torch.isfinite(pruned(torch.arange(3, 11).view(1, 8)).logits).all()


@pytest.mark.parametrize("numel", [1, 5, 4096, 4097, 28_311_552, 2**31 + 7])
def test_fingerprint_positions_stay_inside_tensors_of_any_size(numel):
    index = sample_positions(numel, 4096)
    assert len(index) == min(numel, 4096)
    assert index[0] == 0 and index[-1] == numel - 1  # a float32 linspace passes the end above 2**24
    assert bool((index[1:] > index[:-1]).all())
