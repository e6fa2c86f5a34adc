"""The local zero-shot tasks: they load through lm-eval with --include_path, have ≥ 500 valid items,
and are rebuilt identically from the shipped test split."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from prunebench.demo import tasks, wordnet
from prunebench.demo.corpus import load_split
from prunebench.errors import PrunebenchError

ROOT = Path(__file__).resolve().parents[1]
TASKS_DIR = ROOT / "resources/demo/tasks"


def load_docs(include_path: str) -> dict[str, list[dict]]:
    """The tasks' documents as lm-eval sees them (built-in tasks left out: their index is slow to scan)."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=include_path, include_defaults=False)
    loaded = manager.load(list(tasks.TASKS))["tasks"]
    return {name: list(task.test_docs()) for name, task in loaded.items()}


@pytest.fixture(scope="module")
def docs_from_repo_root():
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        return load_docs("resources/demo/tasks")
    finally:
        os.chdir(cwd)


def test_tasks_load_through_lm_eval_from_repo_root(docs_from_repo_root):
    assert set(docs_from_repo_root) == set(tasks.TASKS)
    for name, docs in docs_from_repo_root.items():
        assert len(docs) >= 500, name
        for doc in docs:
            assert len(doc["choices"]) == 4 and len(set(doc["choices"])) == 4, doc
            assert 0 <= doc["label"] < 4 and doc["context"].strip()


def test_tasks_load_from_another_working_directory(tmp_path, monkeypatch, docs_from_repo_root):
    monkeypatch.chdir(tmp_path)
    docs = load_docs(str(TASKS_DIR))
    assert {k: len(v) for k, v in docs.items()} == {k: len(v) for k, v in docs_from_repo_root.items()}


def test_yaml_has_no_absolute_paths_and_both_metrics():
    for name in tasks.TASKS:
        text = (TASKS_DIR / f"{name}.yaml").read_text()
        assert "/work" not in text and "dataset_path" not in text
        assert "metric: acc\n" in text and "metric: acc_norm" in text


def shipped(name: str) -> list[dict]:
    return [json.loads(line) for line in (TASKS_DIR / f"{name}.jsonl").read_text().splitlines()]


def test_text_tasks_rebuild_identically_from_the_test_split():
    test = load_split(ROOT / "resources/demo/corpus", "test")
    assert tasks.cloze_items(test, 500) == shipped("demo_cloze")
    assert tasks.next_sentence_items(test, 500) == shipped("demo_next_sentence")


def test_cloze_gold_is_the_word_that_ends_the_passage():
    text = load_split(ROOT / "resources/demo/corpus", "test")
    for item in shipped("demo_cloze")[:50]:
        gold = item["choices"][item["label"]]
        assert f"{item['context']} {gold}" in text


def test_next_sentence_gold_follows_the_context():
    text = load_split(ROOT / "resources/demo/corpus", "test")
    for item in shipped("demo_next_sentence")[:50]:
        assert f"{item['context']} {item['choices'][item['label']]}" in text


def test_too_few_candidates_is_an_error():
    with pytest.raises(PrunebenchError, match="fewer than the 500"):
        tasks.cloze_items("One short paragraph that ends with a word here.\n", 500)


WN_LINES = """\
  1 This software and database is being provided to you
00001740 03 n 01 entity 0 000 | that which is perceived
00002000 04 n 02 walk 0 stroll 0 000 | the act of traveling by foot; "he took a walk"
00003000 04 n 01 dance 0 000 | taking a series of rhythmical steps
00004000 04 n 01 ride 0 000 | a journey in a carriage or on horseback
00005000 04 n 01 visit 0 000 | the act of going to see some person
00006000 04 n 01 call 0 000 | a brief social visit
"""


def test_wordnet_parsing_and_items():
    synsets = wordnet.parse_data(WN_LINES, "data.noun")
    assert synsets[1] == wordnet.Synset(4, ("walk", "stroll"), "the act of traveling by foot")
    vocab = {"walk", "dance", "ride", "visit", "call", "stroll"}
    items = wordnet.definition_items(synsets, vocab, 3, seed=0)
    assert items == wordnet.definition_items(synsets, vocab, 3, seed=0)
    for item in items:
        gold = item["choices"][item["label"]]
        assert gold not in item["context"]
        assert "stroll" not in item["choices"] or gold != "walk"
    # "call" is defined with "visit": the gold word never appears in its own definition
    assert not any(
        "a brief social visit" in it["context"] and it["choices"][it["label"]] == "visit" for it in items
    )


def test_wordnet_malformed_line_is_a_clear_error():
    with pytest.raises(PrunebenchError, match="unexpected line"):
        wordnet.parse_data("0000 xx n zz | gloss\n", "data.noun")
    with pytest.raises(PrunebenchError, match="without a gloss"):
        wordnet.parse_data("00001740 03 n 01 entity 0 000\n", "data.noun")
