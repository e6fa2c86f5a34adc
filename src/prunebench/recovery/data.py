"""Recovery training data: plain-text windows (CPT, offline LoRA) or Alpaca-style instructions.

- A text source (a local file, a directory with ``{train,validation,test}.txt``, or a corpus name
  such as ``c4`` / ``wikitext2``; read by :func:`prunebench.data.load_text`) is tokenized once and
  cut into non-overlapping windows of ``seqlen`` tokens; every token is a target.
- ``alpaca`` (Alpaca-cleaned from the Hugging Face Hub, LLM-Pruner's recovery set) or a local
  ``.json`` / ``.jsonl`` file of ``{instruction, input, output}`` records is formatted with the Alpaca
  prompt template and the loss is on the response only (LLM-Pruner's ``train_on_inputs=False``):
  prompt tokens get label -100, the response ends with EOS, sequences are cut at ``seqlen``. A record
  whose response is cut away entirely has no target token: such records are dropped and counted,
  and when every record is cut the data cannot train at that ``seqlen`` (an error naming it).

Batches are drawn from an endless stream of seeded epoch permutations, so the batch of any step is a
pure function of (seed, step): a resumed run sees exactly the batches an uninterrupted one would.
Such data repeats once the budget exceeds it: the epochs are counted (:func:`check_epochs`).
Pretraining corpora too large to hold (``slimpajama``, ``c4``, a local sharded corpus) are streamed
instead, for CPT phases (:mod:`prunebench.recovery.stream`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch

from prunebench.data import load_text, tokenize
from prunebench.data.hub import HUB_SOURCES
from prunebench.data.text import check_text_source
from prunebench.errors import PrunebenchError, warn
from prunebench.files import DEFAULT_ENCODING, check_decodes, read_text_file
from prunebench.recovery.stream import (
    StreamedText,
    check_streamed_source,
    is_streamed_source,
    open_documents,
    packed_windows,
)

IGNORE = -100
INSTRUCTION_SUFFIXES = (".json", ".jsonl")

# The Alpaca prompt format (Stanford Alpaca; LLM-Pruner's templates/alpaca.json): a fixed data format.
PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


def alpaca_prompt(record: dict) -> str:
    """The Alpaca prompt (everything before the response) for one instruction record."""
    if record.get("input"):
        return PROMPT_WITH_INPUT.format(instruction=record["instruction"], input=record["input"])
    return PROMPT_NO_INPUT.format(instruction=record["instruction"])


@dataclass
class SequenceData:
    """Tokenized examples (input ids + labels, at most ``seqlen`` long) with a seeded batch stream."""

    examples: list[tuple[list[int], list[int]]]
    pad_id: int
    seed: int
    kind: str  # "text" | "instruction"
    dropped: int = 0  # records of the source (training and held out) whose whole response seqlen cut away
    _orders: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def windows_per_epoch(self) -> int:
        """Examples in one pass over the data."""
        return len(self.examples)

    def epochs(self, examples: int) -> float:
        """Passes over the data that ``examples`` drawn examples make."""
        return examples / len(self.examples)

    def _order(self, epoch: int) -> torch.Tensor:
        if epoch not in self._orders:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._orders[epoch] = torch.randperm(len(self.examples), generator=gen)
        return self._orders[epoch]

    def stream_batch(self, start: int, size: int) -> dict[str, torch.Tensor]:
        """``size`` examples from position ``start`` of the endless shuffled stream."""
        n = len(self.examples)
        picks = [int(self._order(pos // n)[pos % n]) for pos in range(start, start + size)]
        return self.collate([self.examples[i] for i in picks])

    def ordered_batches(self, size: int):
        """Consecutive batches in file order (validation)."""
        for begin in range(0, len(self.examples), size):
            yield self.collate(self.examples[begin : begin + size])

    def collate(self, examples: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        """Right-pad to the longest example; padding is masked out and ignored by the loss."""
        width = max(len(ids) for ids, _ in examples)
        input_ids = torch.full((len(examples), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, (ids, labs) in enumerate(examples):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, : len(labs)] = torch.tensor(labs)
            mask[row, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def is_instruction_source(source: str) -> bool:
    """Alpaca (Hub) or a local instruction file, as opposed to a text corpus."""
    return source == "alpaca" or source.endswith(INSTRUCTION_SUFFIXES)


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return 0 if pad is None else int(pad)


def text_windows(tokenizer, text: str, seqlen: int, source: str) -> list[tuple[list[int], list[int]]]:
    """Non-overlapping ``seqlen``-token windows of the tokenized text (the remainder is dropped)."""
    ids = tokenize(tokenizer, text).tolist()
    if len(ids) < seqlen:
        raise PrunebenchError(
            f"data source {source!r} has {len(ids)} tokens, fewer than one training sequence of {seqlen}"
        )
    return [(ids[i : i + seqlen], ids[i : i + seqlen]) for i in range(0, len(ids) - seqlen + 1, seqlen)]


def instruction_example(tokenizer, record: dict, seqlen: int) -> tuple[list[int], list[int]]:
    """Prompt + response (+ EOS), labels -100 on the prompt, both cut at ``seqlen`` tokens."""
    prompt = alpaca_prompt(record)
    prompt_ids = tokenizer(prompt)["input_ids"]
    full_ids = tokenizer(prompt + record["output"])["input_ids"]
    if tokenizer.eos_token_id is not None and (not full_ids or full_ids[-1] != tokenizer.eos_token_id):
        full_ids = [*full_ids, tokenizer.eos_token_id]
    full_ids = full_ids[:seqlen]
    n_prompt = min(len(prompt_ids), len(full_ids))
    return full_ids, [IGNORE] * n_prompt + full_ids[n_prompt:]


def has_target(example: tuple[list[int], list[int]]) -> bool:
    """Whether an example has a token to learn: a label other than -100 after the first position
    (the first token is never predicted)."""
    return any(label != IGNORE for label in example[1][1:])


def instruction_examples(records: list[dict], tokenizer, seqlen: int) -> tuple[list, int]:
    """The examples of ``records`` that keep a response token after the cut at ``seqlen``, and how
    many records lost their whole response (left out)."""
    examples = [instruction_example(tokenizer, r, seqlen) for r in records]
    kept = [e for e in examples if has_target(e)]
    return kept, len(examples) - len(kept)


def _all_cut(records: list[dict], tokenizer, seqlen: int, source: str) -> PrunebenchError:
    prompts = [len(tokenizer(alpaca_prompt(r))["input_ids"]) for r in records]
    lengths = f"{min(prompts)}" if min(prompts) == max(prompts) else f"{min(prompts)} to {max(prompts)}"
    return PrunebenchError(
        f"--seqlen {seqlen} cuts away the whole response of all {len(records)} training records of {source!r}: "
        f"the Alpaca prompt alone takes {lengths} tokens; use --seqlen {min(prompts) + 1} or more "
        "(the recovery seqlen)"
    )


def read_instruction_records(source: str, encoding: str = DEFAULT_ENCODING) -> list[dict]:
    """Alpaca-cleaned from the Hub, or records from a local ``.json`` list / ``.jsonl`` file (read as
    ``encoding``; undecodable bytes are named with their offset)."""
    if source == "alpaca":
        try:
            records = HUB_SOURCES["alpaca"].rows("train")
        except PrunebenchError as err:
            raise PrunebenchError(f"{err}; offline, recover on a local text corpus instead") from None
    else:
        text = read_text_file(source, encoding)
        try:
            if source.endswith(".jsonl"):
                records = [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                records = json.loads(text)
        except ValueError as err:
            raise PrunebenchError(f"cannot read instruction data {source!r}: {err}") from None
    if not isinstance(records, list) or not records:
        raise PrunebenchError(f"instruction data {source!r} holds no records")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or not {"instruction", "output"} <= rec.keys():
            raise PrunebenchError(f"instruction record {i} of {source!r} lacks 'instruction' or 'output'")
    return records


def has_validation_split(source: str) -> bool:
    """A directory or a named corpus has a validation split; a single text file has none."""
    return not os.path.isfile(source)


def check_data_source(source: str, encoding: str = DEFAULT_ENCODING) -> None:
    """Before any loading: a local instruction file or text source exists and decodes as ``encoding``,
    a local sharded corpus has train shards (Alpaca and the Hub corpora are not contacted)."""
    if source == "alpaca":
        return
    if is_streamed_source(source):
        check_streamed_source(source, "train")
        return
    if is_instruction_source(source):
        check_decodes(source, encoding)
    else:
        check_text_source(source, "train", encoding)


def check_epochs(
    data: SequenceData | StreamedText, examples: int, max_epochs: float | None, what: str
) -> None:
    """Before training: ``examples`` drawn from ``data`` (a phase's steps x batch) fit in
    ``max_epochs`` passes over it, else a ``PrunebenchError``; more than one pass is a warning.
    A streamed corpus is checked as it is read (its length is known only when it ends)."""
    if not isinstance(data, SequenceData):
        return
    epochs = data.epochs(examples)
    if epochs <= 1:
        return
    size = f"{len(data)} {'windows' if data.kind == 'text' else 'records'}"
    if max_epochs is not None and epochs > max_epochs:
        raise PrunebenchError(
            f"{what} draws {examples} sequences from {size}: {epochs:.2f} epochs, more than "
            f"max_epochs={max_epochs:g} (give more data, e.g. a streamed corpus, or a smaller budget)"
        )
    warn(f"{what} draws {examples} sequences from {size}: {epochs:.2f} epochs (the data repeats)")


def _streamed(source: str, tokenizer, seqlen: int, n_val: int, max_epochs: float | None):
    """A streamed corpus: training windows read on demand, the first ``n_val`` validation windows."""
    train = StreamedText(source, tokenizer, seqlen, _pad_id(tokenizer), max_epochs)
    has_val = source in ("c4", "slimpajama") or os.path.isdir(os.path.join(source, "validation"))
    if n_val <= 0 or not has_val:
        return train, None
    windows = []
    for window in packed_windows(open_documents(source, "validation"), tokenizer, seqlen):
        windows.append((window, window))
        if len(windows) == n_val:
            break
    val = SequenceData(windows, _pad_id(tokenizer), 0, "text") if windows else None
    return train, val


def prepare_data(
    source: str,
    tokenizer,
    seqlen: int,
    seed: int,
    n_val: int,
    encoding: str = DEFAULT_ENCODING,
    stream: bool = False,
    max_epochs: float | None = None,
) -> tuple[SequenceData | StreamedText, SequenceData | None]:
    """Training data and (when the source has one, and ``n_val`` > 0) validation data.

    ``stream`` (CPT phases): a streamed corpus (``slimpajama``, ``c4``, a local sharded corpus) is
    read on demand as a :class:`StreamedText`, whose passes are limited to ``max_epochs``.

    Instruction data: ``n_val`` records are held out by a seeded permutation (LLM-Pruner holds out a
    validation set the same way); records with no response token left after the cut are dropped from
    both (counted in ``dropped``, and a warning), and all of them cut is an error. Text: the source's
    validation split, cut like the training text.
    """
    if stream and is_streamed_source(source):
        return _streamed(source, tokenizer, seqlen, n_val, max_epochs)
    pad = _pad_id(tokenizer)
    if is_instruction_source(source):
        records = read_instruction_records(source, encoding)
        order = torch.randperm(len(records), generator=torch.Generator().manual_seed(seed)).tolist()
        n_hold = min(n_val, len(records) // 10)
        train_records = [records[i] for i in order[n_hold:]]
        train_examples, train_dropped = instruction_examples(train_records, tokenizer, seqlen)
        if not train_examples:
            raise _all_cut(train_records, tokenizer, seqlen, source)
        val_examples, val_dropped = instruction_examples(
            [records[i] for i in order[:n_hold]], tokenizer, seqlen
        )
        dropped = train_dropped + val_dropped
        if dropped:
            warn(
                f"{dropped} of {len(records)} instruction records of {source!r} have no response token "
                f"left within --seqlen {seqlen} and are dropped"
            )
        train = SequenceData(train_examples, pad, seed, "instruction", dropped=dropped)
        val = SequenceData(val_examples, pad, seed, "instruction") if val_examples else None
        return train, val
    train = SequenceData(
        text_windows(tokenizer, load_text(source, "train", encoding), seqlen, source), pad, seed, "text"
    )
    val = None
    if n_val > 0 and has_validation_split(source):
        val_text = load_text(source, "validation", encoding)
        val = SequenceData(text_windows(tokenizer, val_text, seqlen, source)[:n_val], pad, seed, "text")
    return train, val
