"""``prunebench eval ppl``: perplexity on a text split."""

from __future__ import annotations

import argparse

from prunebench.commands.common import (
    add_encoding_argument,
    add_gpus_arguments,
    add_model_arguments,
    device_of,
    dtype_of,
    encoding_of,
    gpus_of,
)
from prunebench.data import load_text
from prunebench.errors import PrunebenchError
from prunebench.evaluation.perplexity import check_options, check_seqlen, perplexity
from prunebench.io import OutputKind, atomic_write_json, check_output
from prunebench.models import load_pretrained

NAME = "ppl"
GROUP = "eval"
HELP = "perplexity over non-overlapping windows of a text"
RESULT = OutputKind("perplexity result", ("ppl", "tokens", "seqlen"), directory=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_gpus_arguments(parser)
    parser.add_argument(
        "--text", required=True, help="a text file, a directory of splits, or wikitext2, c4, ptb"
    )
    parser.add_argument("--split", default="test", help="split when --text names a directory or data set")
    parser.add_argument("--seqlen", type=int, required=True, help="window length in tokens")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--bos", action="store_true", help="start every window with the BOS token")
    parser.add_argument("--max-windows", type=int, help="evaluate only the first N windows")
    add_encoding_argument(parser)
    parser.add_argument(
        "--out", required=True, help="result JSON (new, or an earlier result of this command: replaced)"
    )


def run(args: argparse.Namespace) -> int:
    device = device_of(args)
    spread = gpus_of(args)
    check_options(args.seqlen, args.batch_size, args.max_windows)
    check_output(args.out, RESULT)
    check_seqlen(args.model, args.seqlen)
    text = load_text(args.text, args.split, encoding_of(args))
    model, tokenizer = load_pretrained(args.model, dtype=dtype_of(args), device=device, **spread)
    if tokenizer is None:
        raise PrunebenchError(f"{args.model} has no tokenizer")
    result = perplexity(
        model,
        tokenizer,
        text,
        args.seqlen,
        batch_size=args.batch_size,
        add_bos=args.bos,
        max_windows=args.max_windows,
    )
    result.update({"model": args.model, "text": args.text, "split": args.split, "dtype": args.dtype})
    atomic_write_json(args.out, result)
    print(f"ppl {result['ppl']:.3f} over {result['tokens']} tokens")
    return 0
