"""Recovery data: the Alpaca template with loss on the response only, text windows, the seeded
batch stream, and LoRA on a local instruction file."""

from __future__ import annotations

import json

import pytest
from recovery_fixtures import make_text, make_tokenizer, one_thread, write_model

from prunebench.errors import PrunebenchError
from prunebench.recovery import Budget, RecoveryConfig, recover
from prunebench.recovery.data import (
    IGNORE,
    PROMPT_NO_INPUT,
    alpaca_prompt,
    instruction_example,
    prepare_data,
    text_windows,
)

RECORDS = [
    {"instruction": "the cat sees", "input": "", "output": "the ball ."},
    {"instruction": "the dog likes", "input": "a tree", "output": "the river . the house ."},
]


def test_alpaca_prompt_with_and_without_input():
    assert alpaca_prompt(RECORDS[0]) == PROMPT_NO_INPUT.format(instruction="the cat sees")
    with_input = alpaca_prompt(RECORDS[1])
    assert "### Input:\na tree\n\n### Response:\n" in with_input
    assert with_input.startswith("Below is an instruction that describes a task, paired with an input")


def test_loss_only_on_the_response_and_eos():
    tokenizer = make_tokenizer()
    ids, labels = instruction_example(tokenizer, RECORDS[1], seqlen=256)
    n_prompt = len(tokenizer(alpaca_prompt(RECORDS[1]))["input_ids"])
    response = tokenizer(RECORDS[1]["output"])["input_ids"]
    assert labels[:n_prompt] == [IGNORE] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:] == [*response, tokenizer.eos_token_id]
    short_ids, short_labels = instruction_example(tokenizer, RECORDS[1], seqlen=n_prompt + 2)
    assert len(short_ids) == len(short_labels) == n_prompt + 2 and short_labels[-2:] == response[:2]


def test_text_windows_and_seeded_stream():
    tokenizer = make_tokenizer()
    text = make_text(40, seed=0)
    windows = text_windows(tokenizer, text, 16, "t")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(windows) == len(ids) // 16 and all(
        w == ids[i * 16 : i * 16 + 16] for i, (w, _) in enumerate(windows)
    )
    with pytest.raises(PrunebenchError, match="fewer than one training sequence"):
        text_windows(tokenizer, "the cat", 16, "short")


def test_stream_is_a_function_of_seed_and_position(tmp_path):
    tokenizer = make_tokenizer()
    (tmp_path / "c").mkdir()
    for split in ("train", "validation"):
        (tmp_path / "c" / f"{split}.txt").write_text(make_text(60, seed=len(split)))
    train, val = prepare_data(str(tmp_path / "c"), tokenizer, 8, seed=3, n_val=4)
    again, _ = prepare_data(str(tmp_path / "c"), tokenizer, 8, seed=3, n_val=4)
    other, _ = prepare_data(str(tmp_path / "c"), tokenizer, 8, seed=4, n_val=4)
    n = len(train)
    first = train.stream_batch(0, n)["input_ids"]
    assert sorted(map(tuple, first.tolist())) == sorted(tuple(ids) for ids, _ in train.examples)  # one epoch
    assert again.stream_batch(5, 3)["input_ids"].equal(train.stream_batch(5, 3)["input_ids"])
    assert not other.stream_batch(0, n)["input_ids"].equal(first)
    assert len(val) == 4 and val.kind == train.kind == "text"


def test_lora_on_a_local_instruction_file(tmp_path):
    records = [
        {"instruction": f"{s} {v}", "input": "", "output": f"{o} ."}
        for s in ("the cat", "the dog", "a bird")
        for v in ("sees", "likes")
        for o in ("the ball", "a tree", "the river")
    ]
    path = tmp_path / "instructions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    model_dir = write_model(str(tmp_path / "model"))
    config = RecoveryConfig(batch_size=4, seqlen=64, lr=3e-3, val_batches=1)
    with one_thread():
        summary = recover(
            model_dir,
            "lora",
            str(path),
            str(tmp_path / "out"),
            Budget(steps=12),
            config=config,
            show_progress=False,
        )
    assert summary["data"]["kind"] == "instruction"
    assert summary["val_loss_before"] is not None and summary["val_loss_after"] < summary["val_loss_before"]
    per_step = summary["tokens_trained"] / summary["steps_trained"]
    assert per_step < 4 * 64  # padding is not counted as trained tokens
