"""``prunebench eval ppl``: perplexity on a text split."""

from __future__ import annotations

import argparse
from pathlib import Path

from prunebench.commands.common import (
    add_encoding_argument,
    add_gpus_arguments,
    add_model_arguments,
    device_of,
    dtype_of,
    encoding_of,
    gpus_of,
)
from prunebench.errors import PrunebenchError
from prunebench.io import OutputKind, atomic_write_json, check_output

NAME = "ppl"
GROUP = "eval"
HELP = "perplexity over non-overlapping windows of a text"
RESULT = OutputKind("perplexity result", ("ppl", "tokens", "seqlen"), directory=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_gpus_arguments(parser)
    parser.add_argument(
        "--text",
        required=True,
        action="append",
        help="a text file, a directory of splits, or wikitext2, c4, ptb (repeat for several)",
    )
    parser.add_argument(
        "--split",
        action="append",
        help="split when --text names a directory or data set (default test): once for every --text, "
        "or once per --text in the same order",
    )
    parser.add_argument(
        "--seqlen", type=int, required=True, action="append", help="window length in tokens (repeatable)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--bos", action="store_true", help="start every window with the BOS token")
    parser.add_argument("--max-windows", type=int, help="evaluate only the first N windows")
    add_encoding_argument(parser)
    parser.add_argument(
        "--out",
        required=True,
        action="append",
        help="result JSON (new, or an earlier result of this command: replaced); one per --text x "
        "--seqlen pair, texts outermost",
    )


def text_splits(texts: list[str], splits: list[str] | None) -> list[tuple[str, str]]:
    """Each ``--text`` with the split it is read from: ``test`` when no ``--split`` is given, the one
    ``--split`` for every text, or one ``--split`` per text in order; other counts raise ``PrunebenchError``."""
    if not splits:
        splits = ["test"]
    if len(splits) == 1:
        splits = splits * len(texts)
    if len(splits) != len(texts):
        raise PrunebenchError(f"{len(splits)} --split for {len(texts)} --text; give one, or one per --text")
    return list(zip(texts, splits, strict=True))


def run(args: argparse.Namespace) -> int:
    """Every text x window length with the model loaded once; each result is written as it is done."""
    from prunebench.data import load_text
    from prunebench.evaluation.perplexity import check_options, check_seqlen, perplexity
    from prunebench.models import load_pretrained

    device = device_of(args)
    spread = gpus_of(args)
    sources = text_splits(args.text, args.split)
    pairs = [(source, seqlen) for source in sources for seqlen in args.seqlen]
    if len(args.out) != len(pairs):
        raise PrunebenchError(
            f"{len(args.out)} --out for {len(args.text)} --text x {len(args.seqlen)} --seqlen = "
            f"{len(pairs)} results; give one --out per pair"
        )
    for seqlen in args.seqlen:
        check_options(seqlen, args.batch_size, args.max_windows)
    for out in args.out:
        check_output(out, RESULT)
    for seqlen in args.seqlen:
        check_seqlen(args.model, seqlen)
    texts = {source: load_text(*source, encoding_of(args)) for source in sources}
    model, tokenizer = load_pretrained(args.model, dtype=dtype_of(args), device=device, **spread)
    if tokenizer is None:
        raise PrunebenchError(f"{args.model} has no tokenizer")
    for ((text, split), seqlen), out in zip(pairs, args.out, strict=True):
        result = perplexity(
            model,
            tokenizer,
            texts[text, split],
            seqlen,
            batch_size=args.batch_size,
            add_bos=args.bos,
            max_windows=args.max_windows,
        )
        read_split = None if Path(text).is_file() else split  # a text file is its own text for every split
        result.update({"model": args.model, "text": text, "split": read_split, "dtype": args.dtype})
        atomic_write_json(out, result)
        print(
            f"{text} ({read_split or 'file'}) @ {seqlen}: ppl {result['ppl']:.3f} over {result['tokens']} tokens"
        )
    return 0
