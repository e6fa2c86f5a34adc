"""A 4-way definition → word task from WordNet 3.0 (Debian ``wordnet-base``, WordNet 3.0 licence).

Each item gives a synset's gloss; the choices are the synset's word and three words of the same
lexicographer file (e.g. all ``noun.artifact``). Words are restricted to single words seen in the
demo train split, so that a model trained on it has met every choice.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass

from prunebench.errors import PrunebenchError

PACKAGE = "wordnet-base"
DATA_FILES = tuple(f"usr/share/wordnet/data.{pos}" for pos in ("noun", "verb", "adj", "adv"))
_WORD = re.compile(r"^[a-z]{3,}$")


@dataclass(frozen=True)
class Synset:
    """One line of a WordNet ``data.*`` file: lexicographer file number, words, definition."""

    lexfile: int
    words: tuple[str, ...]
    gloss: str


def parse_data(text: str, name: str) -> list[Synset]:
    """Parse a ``data.{noun,verb,adj,adv}`` file (format in ``man 5 wndb``); licence header lines skipped."""
    out = []
    for line in text.splitlines():
        if line.startswith("  ") or not line.strip():
            continue
        head, sep, gloss = line.partition(" | ")
        fields = head.split()
        try:
            lexfile, n_words = int(fields[1]), int(fields[3], 16)
            words = tuple(re.sub(r"\(.*\)$", "", w).lower() for w in fields[4 : 4 + 2 * n_words : 2])
        except (IndexError, ValueError) as exc:
            raise PrunebenchError(f"{PACKAGE}: unexpected line in {name}: {line[:60]!r}") from exc
        if not sep:
            raise PrunebenchError(f"{PACKAGE}: line without a gloss in {name}: {line[:60]!r}")
        definition = gloss.split('; "')[0].strip().rstrip(";").strip()
        out.append(Synset(lexfile, words, definition))
    if not out:
        raise PrunebenchError(f"{PACKAGE}: no synsets in {name}")
    return out


def vocabulary(train_text: str, min_count: int = 3) -> set[str]:
    """Lower-case words (3+ letters) seen at least ``min_count`` times in the train split."""
    counts = Counter(re.findall(r"[a-z]+", train_text.lower()))
    return {w for w, c in counts.items() if c >= min_count and len(w) >= 3}


def definition_items(synsets: list[Synset], vocab: set[str], n_items: int, seed: int = 0) -> list[dict]:
    """Sample ``n_items`` definition → word items (one per gold word), deterministic in ``seed``."""
    rng = random.Random(seed)
    by_lexfile: dict[int, list[str]] = {}
    for s in synsets:
        by_lexfile.setdefault(s.lexfile, []).extend(w for w in s.words if w in vocab and _WORD.match(w))
    pools = {k: sorted(set(v)) for k, v in by_lexfile.items()}
    candidates, used = [], set()
    for s in synsets:
        gold = next((w for w in s.words if w in vocab and _WORD.match(w)), None)
        if gold is None or gold in used or re.search(rf"\b{gold}", s.gloss.lower()):
            continue
        pool = [w for w in pools[s.lexfile] if w not in s.words]
        if len(pool) >= 3 and len(s.gloss.split()) >= 3:
            candidates.append((s, gold, pool))
            used.add(gold)
    if len(candidates) < n_items:
        raise PrunebenchError(f"{PACKAGE}: only {len(candidates)} definition items, fewer than {n_items}")
    items = []
    for s, gold, pool in rng.sample(candidates, n_items):
        choices = [gold, *rng.sample(pool, 3)]
        rng.shuffle(choices)
        items.append(
            {"context": f'The word for "{s.gloss}" is', "choices": choices, "label": choices.index(gold)}
        )
    return items
