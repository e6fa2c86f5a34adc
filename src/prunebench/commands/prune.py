"""``prunebench prune``: select a plan for one ratio and write the physically pruned checkpoint."""

from __future__ import annotations

import argparse

from prunebench.commands.common import (
    add_gpus_arguments,
    add_model_arguments,
    add_stream_arguments,
    check_ratio,
    model_step_options,
)
from prunebench.commands.score import add_method_arguments, method_params
from prunebench.errors import PrunebenchError

NAME = "prune"
HELP = "prune a model to a ratio of decoder parameters (from saved scores or by scoring first)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_gpus_arguments(parser)
    add_method_arguments(parser)
    parser.add_argument(
        "--ratio", type=float, required=True, help="fraction of decoder-layer parameters to remove"
    )
    parser.add_argument("--scores", help="directory written by `prunebench score`")
    parser.add_argument(
        "--out",
        required=True,
        help="directory for the pruned checkpoint and plan.json: new, empty, or an earlier one (replaced)",
    )
    add_stream_arguments(
        parser,
        "keep the model in CPU memory; a per-ratio pass (wanda-sp) takes one decoder layer at a time to the "
        "device (same plan); needs --scores",
    )


def run(args: argparse.Namespace) -> int:
    from prunebench.steps import prune_model

    check_ratio(args.ratio)
    if args.samples:
        raise PrunebenchError(
            "prune takes --scores or --calib; score saved samples with `prunebench score --samples`"
        )
    plan = prune_model(
        args.model,
        args.method,
        args.ratio,
        args.out,
        scores_dir=args.scores,
        calib=args.calib,
        params=method_params(args),
        **model_step_options(args),
    )
    print(f"pruned to decoder ratio {plan.achieved['decoder_ratio']:.4f}; written to {args.out}")
    return 0
