"""Loaders for the local demo tasks: read ``<task>.jsonl`` next to this file (any working directory)."""

import json
from pathlib import Path

import datasets

HERE = Path(__file__).resolve().parent


def _load(task: str) -> datasets.DatasetDict:
    with open(HERE / f"{task}.jsonl", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def load_cloze(**kwargs) -> datasets.DatasetDict:
    """LAMBADA-style last-word cloze over the held-out half of Persuasion."""
    return _load("demo_cloze")


def load_next_sentence(**kwargs) -> datasets.DatasetDict:
    """HellaSwag-style next-sentence choice over the held-out half of Persuasion."""
    return _load("demo_next_sentence")


def load_wordnet(**kwargs) -> datasets.DatasetDict:
    """WordNet 3.0 definition -> word."""
    return _load("demo_wordnet")
