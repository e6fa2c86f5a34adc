"""``prunebench score``: the expensive, ratio-independent part of a method, saved for every ratio."""

from __future__ import annotations

import argparse

from prunebench.commands.common import (
    add_encoding_argument,
    add_gpus_arguments,
    add_model_arguments,
    add_stream_arguments,
    model_step_options,
    parse_params,
)

NAME = "score"
HELP = "score a model with a method (ratio-independent) and save the scores"


def add_method_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True, help="a name from `prunebench methods`")
    parser.add_argument(
        "--calib", help="calibration text: a local file or directory, or wikitext2, c4, ptb, alpaca"
    )
    parser.add_argument("--samples", help="saved calibration samples (safetensors) to use instead of --calib")
    parser.add_argument("--nsamples", type=int, help="number of calibration samples (default: the method's)")
    parser.add_argument("--seqlen", type=int, help="tokens per calibration sample (default: the method's)")
    parser.add_argument("--seed", type=int, help="calibration seed (default: the method's)")
    parser.add_argument("--param", action="append", metavar="KEY=VALUE", help="a method option (repeatable)")
    add_encoding_argument(parser)


def method_params(args: argparse.Namespace) -> dict:
    params = parse_params(args.param)
    for key in ("nsamples", "seqlen", "seed"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    return params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_gpus_arguments(parser)
    add_method_arguments(parser)
    parser.add_argument(
        "--out", required=True, help="directory for the scores: new, empty, or earlier scores (replaced)"
    )
    add_stream_arguments(
        parser,
        "read the weights one decoder layer at a time from the model directory (same scores, memory of "
        "one layer); `prunebench methods --streaming` says which methods can",
    )


def run(args: argparse.Namespace) -> int:
    from prunebench.steps import score_model

    score_model(
        args.model,
        args.method,
        args.out,
        calib=args.calib,
        samples_path=args.samples,
        params=method_params(args),
        **model_step_options(args),
    )
    print(f"scores written to {args.out}")
    return 0
