"""Continued pretraining at scale: streamed corpora shaped like SlimPajama (local files, never the
Hub), epochs over the data counted, warned and refusable (max_epochs), and mixed precision with
float32 master weights (fp16: loss scaling)."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
import zstandard
from recovery_fixtures import make_text, make_tokenizer, one_thread, write_corpus, write_model

from prunebench.errors import PrunebenchError
from prunebench.recovery import run as run_module
from prunebench.recovery import training
from prunebench.recovery.config import Budget, RecoveryConfig
from prunebench.recovery.run import recover
from prunebench.recovery.stream import StreamedText, open_documents, packed_windows

OPTIONS = {"batch_size": 4, "seqlen": 16, "lr": 3e-3, "val_batches": 1}


def write_slimpajama(root: str, docs_per_shard: int = 20, shards: int = 2) -> str:
    """A directory shaped like cerebras/SlimPajama-627B: <split>/chunk1/example_<split>_<i>.jsonl.zst."""
    seed = 0
    for split, n in (("train", shards), ("validation", 1)):
        os.makedirs(os.path.join(root, split, "chunk1"), exist_ok=True)
        for i in range(n):
            lines = []
            for _ in range(docs_per_shard):
                seed += 1
                meta = {"redpajama_set_name": "RedPajamaC4"}
                lines.append(json.dumps({"text": make_text(8, seed), "meta": meta}))
            data = zstandard.ZstdCompressor().compress(("\n".join(lines) + "\n").encode())
            with open(os.path.join(root, split, "chunk1", f"example_{split}_{i}.jsonl.zst"), "wb") as fh:
                fh.write(data)
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    model = write_model(str(root / "model"))
    return root, model, write_slimpajama(str(root / "slimpajama")), write_corpus(str(root / "corpus"))


def test_documents_stream_in_file_order_and_pack_with_eos(setup):
    _, _, corpus, _ = setup
    docs = list(open_documents(corpus, "train"))
    assert len(docs) == 40 and docs[0] == make_text(8, 1) and docs[20] == make_text(8, 21)
    tok = make_tokenizer()
    windows = list(packed_windows(docs, tok, 16))
    flat = [t for doc in docs for t in [*tok(doc, add_special_tokens=False)["input_ids"], tok.eos_token_id]]
    assert [t for w in windows for t in w] == flat[: len(windows) * 16]
    assert len(windows) == len(flat) // 16


def test_stream_positions_are_deterministic_and_passes_counted(setup, capsys):
    _, _, corpus, _ = setup
    tok = make_tokenizer()
    data = StreamedText(corpus, tok, 16, 1)
    first = data.stream_batch(0, 3)["input_ids"]
    later = data.stream_batch(10, 2)["input_ids"]
    again = StreamedText(corpus, tok, 16, 1)
    assert again.stream_batch(10, 2)["input_ids"].equal(later)
    assert data.stream_batch(0, 3)["input_ids"].equal(first)  # back to an earlier position: reread
    assert data.epochs(13) is None  # the corpus has not ended yet
    n = len(list(packed_windows(open_documents(corpus, "train"), tok, 16)))
    wrapped = data.stream_batch(n, 1)["input_ids"]  # the first window of the second pass
    assert data.windows_per_epoch == n and data.epochs(2 * n) == 2.0
    assert wrapped.equal(first[:1])
    assert f"ended after {n} windows of 16 tokens; pass 2 over it begins" in capsys.readouterr().err
    limited = StreamedText(corpus, tok, 16, 1, max_epochs=1)
    with pytest.raises(
        PrunebenchError,
        match=f"ended after {n} windows of 16 tokens; the budget needs more than max_epochs=1",
    ):
        limited.stream_batch(n, 1)


def test_cpt_streams_a_local_slimpajama_corpus(setup, monkeypatch):
    root, model, corpus, _ = setup
    opened = []
    original = run_module.prepare_data

    def spy(source, *args, **kwargs):
        opened.append(kwargs.get("stream"))
        return original(source, *args, **kwargs)

    monkeypatch.setattr(run_module, "prepare_data", spy)
    with one_thread():
        summary = recover(
            model,
            "cpt",
            corpus,
            str(root / "cpt"),
            Budget(steps=4),
            config=RecoveryConfig(**OPTIONS),
            show_progress=False,
        )
    assert opened == [True]
    assert summary["data"]["streamed"] == [corpus]
    assert summary["data"]["epochs"][corpus] == {"sequences": 16, "sequences_per_epoch": None, "epochs": None}
    assert summary["warnings"] == [] and summary["val_loss_after"] < summary["val_loss_before"]


def test_streamed_corpus_is_refused_for_a_lora_phase(setup):
    root, model, corpus, _ = setup
    with pytest.raises(PrunebenchError, match="streamed pretraining corpus, read by CPT phases only"):
        recover(model, "lora", corpus, str(root / "lora"), Budget(steps=2), config=RecoveryConfig(**OPTIONS))


def test_repeated_data_is_a_warning_in_log_and_summary(setup, capsys):
    root, model, _, text = setup
    with one_thread():
        # 1200 sentences of 4-6 tokens ~ 400 windows of 16: 120 steps x 4 draw them more than once.
        summary = recover(
            model,
            "cpt",
            text,
            str(root / "repeat"),
            Budget(steps=120),
            config=RecoveryConfig(**OPTIONS),
            show_progress=False,
        )
    epochs = summary["data"]["epochs"][text]
    assert epochs["sequences"] == 480 and epochs["epochs"] == pytest.approx(
        480 / epochs["sequences_per_epoch"]
    )
    assert epochs["epochs"] > 1
    assert summary["warnings"] == [
        f"{text!r}: the budget makes {epochs['epochs']:.2f} epochs over the data (it repeats)"
    ]
    assert (
        f"draws 480 sequences from {epochs['sequences_per_epoch']} windows: {epochs['epochs']:.2f} epochs"
        in capsys.readouterr().err
    )


def test_max_epochs_refuses_before_the_model_is_loaded(setup, monkeypatch):
    root, model, _, text = setup

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(run_module, "load_pretrained", refuse)
    config = RecoveryConfig(**OPTIONS, max_epochs=1)
    with pytest.raises(
        PrunebenchError,
        match=r"the budget of cpt on .* draws 480 sequences from \d+ windows: .* epochs, more than max_epochs=1",
    ):
        recover(model, "cpt", text, str(root / "refused"), Budget(steps=120), config=config)
    with pytest.raises(PrunebenchError, match="max_epochs must be > 0"):
        RecoveryConfig(max_epochs=0)


def test_cpt_then_lora_on_one_corpus_reads_fresh_data_in_the_lora_phase(setup):
    _, _, corpus, _ = setup
    from prunebench.recovery.run import _phase_offsets

    assert _phase_offsets(("cpt", "lora"), [corpus, corpus], [3, 5], 4) == [0, 12]
    assert _phase_offsets(("cpt", "lora"), [corpus, "alpaca"], [3, 5], 4) == [0, 0]


@pytest.mark.parametrize("dtype, scaled", [(torch.float16, True), (torch.bfloat16, False)])
def test_half_precision_trains_float32_master_weights(setup, monkeypatch, dtype, scaled):
    """The checkpointed trainable weights and AdamW states are float32, fp16 has a loss scale, and the
    saved model is in the model's dtype."""
    root, model, _, text = setup
    saved = []
    monkeypatch.setattr(training.Checkpointer, "save", lambda self, state: saved.append(state))
    name = str(dtype).removeprefix("torch.")
    with one_thread():
        summary = recover(
            model,
            "cpt",
            text,
            str(root / f"mixed-{name}"),
            Budget(steps=4),
            config=RecoveryConfig(**OPTIONS, save_every=2),
            dtype=dtype,
            show_progress=False,
        )
    state = saved[0]
    assert {t.dtype for t in state["trainable"].values()} == {torch.float32}
    moments = [s["exp_avg"] for s in state["optimizer"]["state"].values()]
    assert moments and {m.dtype for m in moments} == {torch.float32}
    assert (state["scaler"].get("scale") is not None) == scaled
    assert summary["precision"] == (
        f"float32 trainable weights and optimizer states, {name} autocast"
        + (", dynamic loss scaling" if scaled else "")
    )
    with open(os.path.join(root, f"mixed-{name}", "config.json"), encoding="utf-8") as fh:
        config = json.load(fh)
    assert config.get("dtype", config.get("torch_dtype")) == name
    assert summary["final_train_loss"] < summary["initial_train_loss"]


def test_the_report_lists_the_repeated_data_warnings(tmp_path, monkeypatch):
    import yaml

    from prunebench.report.html import _recovery_warnings
    from prunebench.study import validate_config, variants

    with open("config/tiny.yaml", encoding="utf-8") as fh:
        config = validate_config(yaml.safe_load(fh), files=False)
    monkeypatch.chdir(tmp_path)
    recovered = [v for v in variants(config) if v.recovery != "none"]
    assert recovered and _recovery_warnings(config) == []
    line = "'corpus': the budget makes 2.50 epochs over the data (it repeats)"
    os.makedirs(os.path.join(recovered[0].directory, "model"))
    with open(os.path.join(recovered[0].directory, "model", "summary.json"), "w", encoding="utf-8") as fh:
        json.dump({"warnings": [line]}, fh)
    assert _recovery_warnings(config) == [f"{recovered[0].directory}: {line}"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"data": "slimpajama"},
            "config.recovery.lora.data: 'slimpajama' is a streamed pretraining corpus, read by CPT phases "
            "only; lora has a LoRA phase",
        ),
        ({"gpus": 2}, "config.recovery.lora.gpus: 2 GPUs need models on cuda, but tiny run on cpu"),
    ],
)
def test_study_config_refuses_streamed_lora_data_and_gpus_off_cuda(change, message, monkeypatch):
    from pathlib import Path

    import yaml

    from prunebench.study import validate_config

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    with open("config/tiny.yaml", encoding="utf-8") as fh:
        config = yaml.safe_load(fh)
    config["recovery"]["lora"].update(change)
    with pytest.raises(PrunebenchError, match=re.escape(message)):
        validate_config(config)
