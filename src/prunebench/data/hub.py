r"""The Hugging Face Hub data sets the study names, read as data files (no loading scripts).

``datasets`` 4 and later run no loading scripts, so every source here reads files: a data set's own
Parquet or JSON files, or, for a data set that only ever had a script (PTB, BookCorpus), the Parquet
conversion the Hub publishes on its ``refs/convert/parquet`` branch (``{config}/{split}/0000.parquet``).
Rows come in the order of the files, which is the order the old scripts produced.

Each source is one :class:`HubSource` in :data:`HUB_SOURCES`, the only registry of Hub data in the
project: calibration, recovery, perplexity and the methods' own loaders all read through it. A source
reads from the Hub at a revision (a branch, tag or commit; default its ``revision`` field), or from a
local folder laid out like the repository (``root``), which is how the tests read small files shaped
like the originals without touching the Hub.

The study's names, what each reads, how its rows are joined and how its text begins (``starts``,
checked by the preflight on the rows the Hub serves), train / validation / test:

- ``wikitext2``: Salesforce/wikitext, wikitext-2-raw-v1 (main); joined with "\n\n";
  "\n\n = Valkyria Chronicles III = \n" / "\n\n = Homarus gammarus = \n" / "\n\n = Robert Boulter = \n".
- ``ptb``: ptb-text-only/ptb_text_only, penn_treebank (Parquet conversion); joined with "\n\n";
  "aer banknote berlitz calloway centrust" / "consumers may want to move their telephones" /
  "no it was n't black monday".
- ``c4``: allenai/c4, en shard 0 (main), the first 5,000 train and 1,100 validation documents; joined
  with " "; "Beginners BBQ Class Taking Place in Missoula!" / not recorded (test: validation shard 0).
- ``alpaca``: yahma/alpaca-cleaned, its JSON file (main); records; "Give three tips for staying healthy."
- ``bookcorpus``: bookcorpus/bookcorpus, plain_text (Parquet conversion), the first 20,000 rows; joined
  with "\n"; "usually , he would be tearing around the living room , playing with his toys ."
- ``pg19``: emozilla/pg19 (Parquet conversion), the first 20 books; joined with "\n\n"; not recorded.

Streamed for continued pretraining (:data:`HUB_STREAMS`, read document by document): ``slimpajama``,
cerebras/SlimPajama-627B's ``{split}/chunk*/*.jsonl.zst``; ``c4``, allenai/c4's English train shards
in order (validation: shard 0).

BlockPruner's ``alpaca`` is tatsu-lab/alpaca's formatted ``text`` (:data:`ALPACA`); LLM-Pruner reads
every BookCorpus row (:meth:`HubSource.dataset`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from prunebench.errors import PrunebenchError
from prunebench.revisions import dataset_revision

PARQUET_BRANCH = "refs/convert/parquet"


@dataclass(frozen=True)
class HubSource:
    """One Hub data set as the papers read it.

    ``files`` maps the study's split (``train``/``validation``/``test``) to a glob inside the repository
    at ``revision``; ``max_rows`` optionally caps the rows read of a split (read streaming, so only the
    first files are fetched); the text of a split is ``join.join(row[column] for row in rows)``.
    ``paper`` says whose loader the text matches, ``starts`` the first characters of a split's text
    as those loaders produce it (of the first row for a source read as rows).
    """

    repo: str
    files: Mapping[str, str]
    column: str
    join: str
    paper: str
    revision: str = "main"
    max_rows: Mapping[str, int] = field(default_factory=dict)
    starts: Mapping[str, str] = field(default_factory=dict)

    @property
    def format(self) -> str:
        """The ``datasets`` builder for the files: ``parquet`` or ``json`` (``.json``/``.json.gz``)."""
        return "parquet" if next(iter(self.files.values())).endswith(".parquet") else "json"

    def split_pattern(self, split: str) -> str:
        """The glob of ``split`` inside the repository; an unknown split is a ``PrunebenchError``."""
        if split not in self.files:
            raise PrunebenchError(f"{self.repo} has no {split} split (it has {', '.join(self.files)})")
        return self.files[split]

    def location(self, split: str, revision: str | None = None, root: str | Path | None = None) -> str:
        """Where ``split`` is read: ``hf://datasets/<repo>@<revision>/<glob>``, or ``<root>/<glob>``."""
        pattern = self.split_pattern(split)
        if root is not None:
            return str(Path(root) / pattern)
        return f"hf://datasets/{self.repo}@{quote(self.served_revision(revision), safe='')}/{pattern}"

    def served_revision(self, revision: str | None = None) -> str:
        """The revision read: ``revision``, else the study's pin of :attr:`repo`, else :attr:`revision`."""
        return revision or dataset_revision(self.repo) or self.revision

    def dataset(self, split: str, revision: str | None = None, root: str | Path | None = None) -> Any:
        """All rows of ``split`` as a ``datasets.Dataset`` (memory-mapped; files cached by ``datasets``)."""
        import datasets

        where = self.location(split, revision, root)
        with _reading(where):
            return datasets.load_dataset(self.format, data_files=where, split="train")

    def first_rows(
        self, split: str, n: int, revision: str | None = None, root: str | Path | None = None
    ) -> list[dict[str, Any]]:
        """The first ``n`` rows of ``split``, streamed: only the first files are fetched."""
        import datasets

        where = self.location(split, revision, root)
        with _reading(where):
            stream = datasets.load_dataset(self.format, data_files=where, split="train", streaming=True)
            return list(stream.take(n))

    def stream(self, split: str, revision: str | None = None, root: str | Path | None = None) -> Any:
        """Every row of ``split`` as a ``datasets`` streaming iterable, in file order (nothing cached)."""
        import datasets

        where = self.location(split, revision, root)
        with _reading(where):
            return datasets.load_dataset(self.format, data_files=where, split="train", streaming=True)

    def rows(self, split: str, revision: str | None = None, root: str | Path | None = None) -> list[Any]:
        """The rows a text of ``split`` is made of: the first :attr:`max_rows` of the split, else all."""
        if split in self.max_rows:
            return self.first_rows(split, self.max_rows[split], revision, root)
        return list(self.dataset(split, revision, root))

    def text(self, split: str, revision: str | None = None, root: str | Path | None = None) -> str:
        """The text of ``split``: its rows' ``column`` joined with ``join``, as :attr:`paper`'s loader does."""
        rows = self.rows(split, revision, root)
        if rows and self.column not in rows[0]:
            raise PrunebenchError(
                f"{self.location(split, revision, root)} has no column {self.column!r} "
                f"(columns: {', '.join(rows[0])})"
            )
        return self.join.join(row[self.column] for row in rows)


@contextlib.contextmanager
def _reading(where: str) -> Iterator[None]:
    """Any failure to read ``where`` (no network, no such file or revision, a broken file) becomes one
    ``PrunebenchError`` naming it."""
    try:
        yield
    except PrunebenchError:
        raise
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PrunebenchError(f"cannot read {where}: {reason}") from None


WIKITEXT2 = HubSource(
    repo="Salesforce/wikitext",
    files={s: f"wikitext-2-raw-v1/{s}-*.parquet" for s in ("train", "validation", "test")},
    column="text",
    join="\n\n",
    paper='GPTQ, SparseGPT, Wanda, FLAP, LLM-Pruner, Shortened-LLaMA: "\\n\\n".join(rows["text"])',
    # The first row of every split is empty, so each text starts with the separator.
    starts={
        "train": "\n\n = Valkyria Chronicles III = \n",
        "validation": "\n\n = Homarus gammarus = \n",
        "test": "\n\n = Robert Boulter = \n",
    },
)

PTB = HubSource(
    repo="ptb-text-only/ptb_text_only",
    files={s: f"penn_treebank/{s}/*.parquet" for s in ("train", "validation", "test")},
    column="sentence",
    join="\n\n",
    paper='LLM-Pruner, FLAP, Shortened-LLaMA (process_data): "\\n\\n".join(rows["sentence"]); they evaluate '
    'the validation split, SparseGPT/Wanda/SLEB join the test split with " "',
    revision=PARQUET_BRANCH,
    starts={
        "train": "aer banknote berlitz calloway centrust cluett",
        "validation": "consumers may want to move their telephones a little closer to the tv set\n\n",
        "test": "no it was n't black monday\n\n",
    },
)

C4 = HubSource(
    repo="allenai/c4",
    files={
        "train": "en/c4-train.00000-of-01024.json.gz",
        "validation": "en/c4-validation.00000-of-00008.json.gz",
        "test": "en/c4-validation.00000-of-00008.json.gz",  # C4 has no test split
    },
    column="text",
    join=" ",
    paper="SparseGPT, Wanda, FLAP (get_c4): \" \".join(valdata[:1100]['text']) of validation shard 0",
    max_rows={"train": 5000, "validation": 1100, "test": 1100},
    starts={"train": "Beginners BBQ Class Taking Place in Missoula!"},
)

ALPACA_CLEANED = HubSource(
    repo="yahma/alpaca-cleaned",
    files={"train": "alpaca_data_cleaned.json"},
    column="instruction",
    join="\n\n",
    paper="LLM-Pruner post_training, Shortened-LLaMA lora_retrain: load_dataset('yahma/alpaca-cleaned')",
    starts={"train": "Give three tips for staying healthy."},
)

ALPACA = HubSource(
    repo="tatsu-lab/alpaca",
    files={"train": "data/train-*.parquet"},
    column="text",
    join="\n\n",
    paper="BlockPruner: load_dataset('tatsu-lab/alpaca')['text']",
    starts={"train": "Below is an instruction that describes a task. Write a response that appropriately"},
)

BOOKCORPUS = HubSource(
    repo="bookcorpus/bookcorpus",
    files={"train": "plain_text/train/*.parquet"},
    column="text",
    join="\n",
    paper="Shortened-LLaMA, LLM-Pruner (get_examples): load_dataset('bookcorpus', split='train')",
    revision=PARQUET_BRANCH,
    max_rows={"train": 20000},
    starts={"train": "usually , he would be tearing around the living room , playing with his toys .\n"},
)

PG19 = HubSource(
    repo="emozilla/pg19",
    # A large split's conversion may be partial (default/partial-train): the first books are in both.
    files={s: f"default/*{s}/*.parquet" for s in ("train", "validation", "test")},
    column="text",
    join="\n\n",
    paper="ShortGPT: PG19 books",
    revision=PARQUET_BRANCH,
    max_rows={"train": 20, "validation": 20, "test": 20},
)

#: The Hub data sets by the name a study gives them (``calibration.source``, ``recovery.*.data``,
#: ``evaluation.ppl.datasets``); ``alpaca`` is Alpaca-cleaned's instructions as plain text.
HUB_SOURCES: dict[str, HubSource] = {
    "wikitext2": WIKITEXT2,
    "ptb": PTB,
    "c4": C4,
    "alpaca": ALPACA_CLEANED,
    "bookcorpus": BOOKCORPUS,
    "pg19": PG19,
}


SLIMPAJAMA = HubSource(
    repo="cerebras/SlimPajama-627B",
    files={s: f"{s}/chunk*/*.jsonl.zst" for s in ("train", "validation", "test")},
    column="text",
    join="\n\n",
    paper="Shortened-LLaMA's continued pretraining data (SlimPajama-627B), streamed",
)

C4_STREAM = HubSource(
    repo="allenai/c4",
    files={
        "train": "en/c4-train.*-of-01024.json.gz",
        "validation": "en/c4-validation.00000-of-00008.json.gz",
    },
    column="text",
    join=" ",
    paper="C4's English train shards in order, for continued pretraining (streamed)",
    starts={"train": "Beginners BBQ Class Taking Place in Missoula!"},
)

#: The corpora continued pretraining streams (``prunebench.recovery.stream``), by the name a study's
#: ``recovery.*.data`` gives them: read document by document, never joined into one text.
HUB_STREAMS: dict[str, HubSource] = {"slimpajama": SLIMPAJAMA, "c4": C4_STREAM}

#: Every Hub data set the project reads, by repository: the sources above and the rows methods read.
HUB_REPOS: dict[str, HubSource] = {s.repo: s for s in (*HUB_STREAMS.values(), *HUB_SOURCES.values(), ALPACA)}


def stream_data_files(builder: str, files: list[str]) -> Any:
    """The rows of local data files (``builder``: ``json`` or ``parquet``) streamed in the given order:
    a local corpus shaped like a streamed Hub one (``prunebench.recovery.stream``)."""
    import datasets

    with _reading(", ".join(files[:3]) + (" ..." if len(files) > 3 else "")):
        return datasets.load_dataset(builder, data_files=files, split="train", streaming=True)


def alpaca_text(records: list[dict[str, Any]]) -> str:
    """Alpaca records as plain text: each record's instruction, input and output joined with a space,
    records joined with "\\n\\n" (BlockPruner calibrates on Alpaca as plain text)."""
    return "\n\n".join(
        " ".join(part for part in (r["instruction"], r["input"], r["output"]) if part) for r in records
    )


def hub_text(name: str, split: str, revision: str | None = None, root: str | Path | None = None) -> str:
    """The text of ``split`` of Hub source ``name`` (see :data:`HUB_SOURCES`)."""
    source = HUB_SOURCES[name]
    if name == "alpaca":
        return alpaca_text(source.rows(split, revision, root))
    return source.text(split, revision, root)
