"""Streamed pretraining corpora for continued pretraining (CPT): read in order, never held in memory.

A CPT budget of 200M tokens is far more text than a corpus loaded as one string (C4's first 5,000
documents hold about 2.5M tokens), so a streamed source is read document by document through
``datasets``' streaming mode, tokenized and packed into ``seqlen``-token windows as training
consumes them: a budget reads as much fresh text as it needs and repeats nothing unless the corpus
ends (then it starts again, and the epochs are counted and checked against ``max_epochs``).

Streamed sources:

- ``slimpajama``: ``cerebras/SlimPajama-627B`` (Shortened-LLaMA's CPT data), its ``train`` /
  ``validation`` folders of ``chunk*/example_*.jsonl.zst`` files, ``text`` field (needs ``zstandard``).
- ``c4``: ``allenai/c4``'s English train shards in order (``en/c4-train.*-of-01024.json.gz``); its
  validation split is the validation shard 0 that the perplexity and calibration loaders use.
- a local directory shaped like SlimPajama: ``<dir>/<split>/**/*.jsonl.zst`` (or ``.jsonl``,
  ``.jsonl.gz``, ``.json.gz``, ``.parquet``) with a ``text`` field, read by ``datasets``' json or
  parquet builders in sorted file order.

Packing (as Hugging Face's ``run_clm``): each document's tokens (no special tokens added) followed
by EOS, concatenated, cut into consecutive windows; the last partial window of a pass is dropped.
The corpus is read in its stored order (SlimPajama and C4 are shuffled when built), so the window at
stream position ``p`` is a pure function of ``p``; a resumed run reads (and skips) the windows
before its position again, tokenizing them without training on them. With several data-parallel
processes each reads the stream and keeps its own share of every batch.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Iterator

import torch

from prunebench.data.hub import HUB_STREAMS, stream_data_files
from prunebench.errors import PrunebenchError, warn

SHARD_SUFFIXES = {
    ".jsonl.zst": "json",
    ".jsonl": "json",
    ".jsonl.gz": "json",
    ".json.gz": "json",
    ".parquet": "parquet",
}
TOKENIZE_CHUNK = 256  # documents tokenized per call


def _shards(directory: str, split: str) -> tuple[str, list[str]]:
    """The ``datasets`` builder and the sorted shard files of ``directory/split``."""
    root = os.path.join(directory, split)
    files = sorted(f for f in glob.glob(os.path.join(root, "**", "*"), recursive=True) if os.path.isfile(f))
    found = {suffix: [f for f in files if f.endswith(suffix)] for suffix in SHARD_SUFFIXES}
    kinds = {SHARD_SUFFIXES[s] for s, fs in found.items() if fs}
    if not kinds:
        raise PrunebenchError(f"{root} holds no corpus shards ({', '.join('*' + s for s in SHARD_SUFFIXES)})")
    if len(kinds) > 1:
        raise PrunebenchError(f"{root} mixes json and parquet shards; keep one format per split")
    shard_files = sorted(f for fs in found.values() for f in fs)
    return kinds.pop(), shard_files


def is_local_corpus(source: str) -> bool:
    """A local directory shaped like SlimPajama (a ``train`` folder of shards, not ``train.txt``)."""
    return os.path.isdir(os.path.join(source, "train"))


def is_streamed_source(source: str) -> bool:
    """Whether CPT reads ``source`` as a stream: ``slimpajama``, ``c4`` or a local sharded corpus."""
    return source in HUB_STREAMS or is_local_corpus(source)


def check_streamed_source(source: str, split: str = "train") -> None:
    """Before any loading: a local sharded corpus has shards for ``split`` and ``zstandard`` is there
    for ``.zst`` files. Hub corpora are not contacted. ``PrunebenchError`` otherwise."""
    if source in HUB_STREAMS:
        if source == "slimpajama":
            _need_zstandard(source)
        return
    _, files = _shards(source, split)
    if any(f.endswith(".zst") for f in files):
        _need_zstandard(source)


def _need_zstandard(source: str) -> None:
    try:
        import zstandard  # noqa: F401
    except ImportError:
        raise PrunebenchError(
            f"data source {source!r} is zstandard-compressed jsonl; pip install zstandard"
        ) from None


def _texts(rows: Iterable[dict], source: str) -> Iterator[str]:
    for row in rows:
        if "text" not in row:
            raise PrunebenchError(f"data source {source!r} has rows without a 'text' field: {sorted(row)}")
        yield row["text"]


def open_documents(source: str, split: str) -> Iterator[str]:
    """The documents of ``split`` of a streamed source, in stored order (``datasets`` streaming)."""
    if source in HUB_STREAMS:
        try:
            rows = HUB_STREAMS[source].stream(split)
        except Exception as err:  # network, cache or format problems all mean: no corpus here
            raise PrunebenchError(f"cannot stream {source!r} from the Hugging Face Hub ({err})") from err
        return _texts(rows, source)
    builder, files = _shards(source, split)
    return _texts(stream_data_files(builder, files), source)


def packed_windows(documents: Iterable[str], tokenizer, seqlen: int) -> Iterator[list[int]]:
    """Consecutive ``seqlen``-token windows of the documents' tokens, each document followed by EOS."""
    eos = tokenizer.eos_token_id
    buffer: list[int] = []
    chunk: list[str] = []

    def flush() -> Iterator[list[int]]:
        nonlocal buffer
        encoded = tokenizer(chunk, add_special_tokens=False, return_attention_mask=False, verbose=False)
        for ids in encoded["input_ids"] if chunk else []:
            buffer.extend(ids)
            if eos is not None:
                buffer.append(eos)
        chunk.clear()
        cut = len(buffer) - len(buffer) % seqlen
        for begin in range(0, cut, seqlen):
            yield buffer[begin : begin + seqlen]
        buffer = buffer[cut:]

    for doc in documents:
        chunk.append(doc)
        if len(chunk) == TOKENIZE_CHUNK:
            yield from flush()
    yield from flush()


class StreamedText:
    """Training windows read from a streamed corpus as training consumes them.

    Same interface as :class:`~prunebench.recovery.data.SequenceData` for training:
    ``stream_batch(start, size)`` gives the windows at stream positions ``start .. start+size-1``.
    Positions only move forward (a smaller ``start`` reopens the stream and skips to it). When the
    corpus ends the stream starts again: ``windows_per_epoch`` is then known, the epochs are counted,
    and a pass beyond ``max_epochs`` is a ``PrunebenchError``.
    """

    kind = "text"
    dropped = 0

    def __init__(
        self,
        source: str,
        tokenizer,
        seqlen: int,
        pad_id: int,
        max_epochs: float | None = None,
        documents: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self.source = source
        self.tokenizer = tokenizer
        self.seqlen = seqlen
        self.pad_id = pad_id
        self.max_epochs = max_epochs
        self._documents = documents or (lambda: open_documents(source, "train"))
        self.windows_per_epoch: int | None = None
        self._iter: Iterator[list[int]] | None = None
        self._cursor = 0  # stream position of the next window ``_iter`` yields
        self._pass_start = 0  # stream position where the current pass began

    def _reopen(self) -> None:
        self._iter = packed_windows(self._documents(), self.tokenizer, self.seqlen)
        self._cursor = self._pass_start = 0

    def _next(self) -> list[int]:
        if self._iter is None:
            self._reopen()
        for window in self._iter:
            self._cursor += 1
            return window
        if self._cursor == self._pass_start:
            raise PrunebenchError(
                f"data source {self.source!r} has fewer tokens than one training sequence of {self.seqlen}"
            )
        self.windows_per_epoch = self._cursor - self._pass_start
        if self.max_epochs is not None and self._cursor // self.windows_per_epoch + 1 > self.max_epochs:
            raise PrunebenchError(
                f"data source {self.source!r} ended after {self.windows_per_epoch} windows of {self.seqlen} "
                f"tokens; the budget needs more than max_epochs={self.max_epochs:g} passes over it "
                "(give more data or a smaller budget)"
            )
        warn(
            f"data source {self.source!r} ended after {self.windows_per_epoch} windows of {self.seqlen} "
            f"tokens; pass {self._cursor // self.windows_per_epoch + 1} over it begins (the data repeats)"
        )
        self._iter = packed_windows(self._documents(), self.tokenizer, self.seqlen)
        self._pass_start = self._cursor
        return self._next()

    def epochs(self, windows: int) -> float | None:
        """Passes over the corpus that ``windows`` windows make; None while the corpus has not ended
        (then fewer than one)."""
        return None if self.windows_per_epoch is None else windows / self.windows_per_epoch

    def stream_batch(self, start: int, size: int) -> dict[str, torch.Tensor]:
        """The windows at stream positions ``start`` .. ``start + size - 1`` (every token a target)."""
        if start < self._cursor:
            self._reopen()
        while self._cursor < start:
            self._next()
        ids = torch.tensor([self._next() for _ in range(size)], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
