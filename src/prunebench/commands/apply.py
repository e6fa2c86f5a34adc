"""``prunebench apply``: apply a plan.json to its base model and write the pruned checkpoint."""

from __future__ import annotations

import argparse

from prunebench.commands.common import add_model_arguments, device_of, dtype_of

NAME = "apply"
HELP = "apply a pruning plan to a model and write the pruned checkpoint (with achieved ratios)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--plan", required=True, help="plan.json (format: docs/plan-format.md)")
    parser.add_argument(
        "--out", required=True, help="new or empty directory, or an earlier pruned checkpoint (replaced)"
    )


def run(args: argparse.Namespace) -> int:
    from prunebench.steps import apply_plan_file

    device_of(args)  # the plan is applied on the CPU; a bad --device is still an error
    plan = apply_plan_file(args.model, args.plan, args.out, dtype=dtype_of(args))
    print(f"pruned to decoder ratio {plan.achieved['decoder_ratio']:.4f}; written to {args.out}")
    return 0
