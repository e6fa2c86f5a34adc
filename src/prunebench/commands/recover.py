"""``prunebench recover``: train a pruned model back (LoRA, CPT, cfsp_lora, CPT then LoRA)."""

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
    parse_params,
)
from prunebench.recovery import Budget, RecoveryConfig, available_variants, recover

NAME = "recover"
HELP = "recover a pruned model under a step or token budget; writes the merged model, log and summary"

# CLI flag -> RecoveryConfig field (only flags given on the command line override the defaults).
CONFIG_FLAGS = {
    "batch_size": int,
    "micro_batch_size": int,
    "seqlen": int,
    "lr": float,
    "schedule": str,
    "warmup_ratio": float,
    "lora_r": int,
    "lora_alpha": float,
    "lora_dropout": float,
    "target_modules": str,
    "save_every": int,
    "val_batches": int,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_gpus_arguments(parser)
    parser.add_argument("--variant", required=True, help=f"one of: {', '.join(available_variants())}")
    parser.add_argument(
        "--data",
        required=True,
        help="training data: a text file / split directory / corpus name (wikitext2, c4, ...), "
        "or alpaca (Hub) / a local .json(l) of instruction records",
    )
    parser.add_argument(
        "--out", required=True, help="new or empty directory, or an earlier recovered model (replaced)"
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="budget in optimizer steps")
    budget.add_argument("--tokens", type=int, help="budget in training tokens (steps of batch x seqlen)")
    parser.add_argument("--seed", type=int, default=0)
    for field, kind in CONFIG_FLAGS.items():
        flag = "--" + field.replace("_", "-")
        help_text = "comma-separated module names" if field == "target_modules" else None
        parser.add_argument(flag, dest=field, type=kind, default=None, help=help_text)
    parser.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for memory")
    parser.add_argument("--param", action="append", metavar="KEY=VALUE", help="any other recovery option")
    parser.add_argument("--scores", help="cfsp_lora: CFSP scores directory (coarse_importance)")
    parser.add_argument("--lora-data", help="data for the LoRA phase of cpt_lora (default: --data)")
    parser.add_argument("--checkpoint-dir", help="resumable state (default: OUT/resume)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_encoding_argument(parser)


def config_of(args: argparse.Namespace) -> RecoveryConfig:
    """RecoveryConfig from the flags given and ``--param`` pairs (unknown keys are errors)."""
    params: dict = {field: getattr(args, field) for field in CONFIG_FLAGS if getattr(args, field) is not None}
    if args.gradient_checkpointing:
        params["gradient_checkpointing"] = True
    params.update(parse_params(args.param))
    return RecoveryConfig.from_params(params)


def run(args: argparse.Namespace) -> int:
    summary = recover(
        args.model,
        args.variant,
        args.data,
        args.out,
        Budget(steps=args.steps, tokens=args.tokens),
        seed=args.seed,
        config=config_of(args),
        scores_dir=args.scores,
        lora_data=args.lora_data,
        checkpoint_dir=args.checkpoint_dir,
        device=device_of(args),
        **gpus_of(args),
        dtype=dtype_of(args),
        encoding=encoding_of(args),
        show_progress=not args.no_progress,
    )
    val = summary["val_loss_after"]
    print(
        f"{args.variant}: {summary['steps_trained']} steps, {summary['tokens_trained']} tokens, "
        f"train loss {summary['initial_train_loss']:.4f} -> {summary['final_train_loss']:.4f}"
        + (f", validation loss {summary['val_loss_before']:.4f} -> {val:.4f}" if val is not None else "")
        + f"; written to {args.out}"
    )
    return 0
