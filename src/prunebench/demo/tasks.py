"""Local zero-shot multiple-choice tasks for lm-eval, built deterministically from held-out text.

Every item is ``{"context": str, "choices": [4 str], "label": int}``; lm-eval scores each choice by
its log-likelihood after ``context + " "`` and reports ``acc`` and ``acc_norm`` (length-normalised).

- ``demo_cloze`` (LAMBADA-style): a passage of the test split cut before the last word of a sentence;
  choose that word among four words that end other sentences of the split.
- ``demo_next_sentence`` (HellaSwag-style): one to three sentences of a paragraph; choose the true
  next sentence among four, the distractors being sentences of similar length from elsewhere.
- ``demo_wordnet`` (definition → word, built by :mod:`prunebench.demo.wordnet`).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from prunebench.demo.atomic import write_text
from prunebench.demo.text import sentences
from prunebench.errors import PrunebenchError

N_CHOICES = 4
_LAST_WORD = re.compile(r"^(?P<context>.*\S)\s+(?P<word>[A-Za-z]{3,})(?P<punct>[.!?;,\"')]*)$", re.S)


def _spread(items: list, n: int) -> list:
    """Every k-th of ``items`` so that ``n`` are kept, spread over the whole split."""
    if len(items) < n:
        raise PrunebenchError(f"only {len(items)} candidate items, fewer than the {n} asked for")
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def _with_gold(rng: random.Random, gold: str, distractors: list[str]) -> dict:
    choices = [gold, *distractors]
    rng.shuffle(choices)
    return {"choices": choices, "label": choices.index(gold)}


def cloze_items(text: str, n_items: int, seed: int = 0, context_words: int = 60) -> list[dict]:
    """LAMBADA-style items: up to ``context_words`` words of preceding text, then a sentence minus its last word.

    Only sentences whose last word is alphabetic (≥ 3 letters) qualify. Distractors are the final
    words of other qualifying sentences, with the same capitalisation (names against names).
    """
    rng = random.Random(seed)
    paragraphs = [sentences(p) for p in text.splitlines() if p.strip()]
    candidates = []
    for para in paragraphs:
        for i, sent in enumerate(para):
            m = _LAST_WORD.match(sent)
            if m is None:
                continue
            before = " ".join(" ".join(para[:i]).split()[-context_words:])
            context = f"{before} {m['context']}".strip()
            if len(context.split()) >= 15:
                candidates.append((context, m["word"]))
    pools = {cap: sorted({w for _, w in candidates if w[0].isupper() == cap}) for cap in (True, False)}
    items = []
    for context, word in _spread(candidates, n_items):
        pool = [w for w in pools[word[0].isupper()] if w.lower() != word.lower()]
        if len(pool) < N_CHOICES - 1:
            pool = [w for w in pools[True] + pools[False] if w.lower() != word.lower()]
        items.append({"context": context, **_with_gold(rng, word, rng.sample(pool, N_CHOICES - 1))})
    return items


def next_sentence_items(text: str, n_items: int, seed: int = 0) -> list[dict]:
    """HellaSwag-style items: 1–3 sentences (≥ 8 words) of a paragraph; choose the true next sentence.

    Distractors are the three sentences from other paragraphs closest in length to the gold one
    (characters; ties broken at random), so that neither raw nor length-normalised log-likelihood can
    win by preferring short or long answers.
    """
    rng = random.Random(seed)
    paragraphs = [sentences(p) for p in text.splitlines() if p.strip()]
    flat = [(pi, s) for pi, para in enumerate(paragraphs) for s in para if len(s.split()) >= 4]
    candidates = []
    for pi, para in enumerate(paragraphs):
        for i in range(1, len(para)):
            context = " ".join(para[max(0, i - 3) : i])
            if len(para[i].split()) >= 4 and len(context.split()) >= 8:
                candidates.append((pi, context, para[i]))
    items = []
    for pi, context, gold in _spread(candidates, n_items):
        others = sorted({s for qi, s in flat if qi != pi and s != gold})
        rng.shuffle(others)
        closest = sorted(others, key=lambda s: abs(len(s) - len(gold)))[: N_CHOICES - 1]
        items.append({"context": context, **_with_gold(rng, gold, closest)})
    return items


def write_items(items: list[dict], path: str | Path) -> Path:
    """Write items as JSON lines (atomically)."""
    write_text(path, "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items))
    return Path(path)


TASKS = ("demo_cloze", "demo_next_sentence", "demo_wordnet")


def build_tasks(
    corpus_dir: str | Path,
    deb_dir: str | Path,
    out_dir: str | Path,
    n_items: int = 500,
    download: bool = True,
) -> dict[str, Path]:
    """Write ``{task}.jsonl`` for the three tasks into ``out_dir`` (the YAML files live beside them)."""
    from prunebench.demo import debian, wordnet
    from prunebench.demo.corpus import load_split

    test, train = load_split(corpus_dir, "test"), load_split(corpus_dir, "train")
    deb = debian.find_or_download(wordnet.PACKAGE, deb_dir, download=download)
    files = debian.read_members(deb, list(wordnet.DATA_FILES))
    synsets = [
        s for name in wordnet.DATA_FILES for s in wordnet.parse_data(files[name].decode("utf-8"), name)
    ]
    items = {
        "demo_cloze": cloze_items(test, n_items),
        "demo_next_sentence": next_sentence_items(test, n_items),
        "demo_wordnet": wordnet.definition_items(synsets, wordnet.vocabulary(train), n_items),
    }
    return {task: write_items(rows, Path(out_dir) / f"{task}.jsonl") for task, rows in items.items()}
