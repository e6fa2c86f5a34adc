"""``prunebench recover``: train a pruned model back (LoRA, CPT, cfsp_lora, CPT then LoRA)."""

from __future__ import annotations

import argparse
import dataclasses

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
from prunebench.recovery.config import RecoveryConfig

NAME = "recover"
HELP = "recover a pruned model under a step or token budget; writes the merged model, log and summary"

# The registered variants (prunebench.recovery.variants, which imports torch); a test keeps them equal.
VARIANTS = ("lora", "cpt", "cpt_lora", "cfsp_lora")

# CLI flag -> RecoveryConfig field: its type and help (only flags given on the command line override).
CONFIG_FLAGS = {
    "batch_size": (int, "sequences per optimizer step"),
    "micro_batch_size": (
        int,
        "sequences per forward pass, for gradient accumulation (default: the batch size)",
    ),
    "seqlen": (int, "tokens per training sequence"),
    "lr": (float, "peak learning rate"),
    "schedule": (str, "learning-rate schedule after warm-up"),
    "warmup_ratio": (float, "fraction of the budget spent warming up"),
    "lora_r": (int, "LoRA rank"),
    "lora_alpha": (float, "LoRA alpha"),
    "lora_dropout": (float, "LoRA dropout"),
    "target_modules": (str, "comma-separated module names that get LoRA adapters"),
    "save_every": (int, "steps between resumable checkpoints"),
    "val_batches": (int, "validation batches before and after training"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_gpus_arguments(parser)
    parser.add_argument("--variant", required=True, help=f"recovery variant, one of: {', '.join(VARIANTS)}")
    parser.add_argument(
        "--data",
        required=True,
        help="training data: a text file / split directory / corpus name (wikitext2, c4, ...), "
        "or alpaca (Hub) / a local .json(l) of instruction records; CPT streams slimpajama, c4 and "
        "local SlimPajama-shaped corpora (DIR/train/**/*.jsonl.zst)",
    )
    parser.add_argument(
        "--out", required=True, help="new or empty directory, or an earlier recovered model (replaced)"
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="budget in optimizer steps")
    budget.add_argument("--tokens", type=int, help="budget in training tokens (steps of batch x seqlen)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data order, LoRA init and dropout")
    defaults = {f.name: f.default for f in dataclasses.fields(RecoveryConfig)}
    for field, (kind, text) in CONFIG_FLAGS.items():
        flag = "--" + field.replace("_", "-")
        # default=None: only flags given on the command line override the RecoveryConfig defaults shown.
        default = defaults[field]
        shown = ",".join(default) if isinstance(default, tuple) else default
        help_text = text if default is None else f"{text} (default: {shown})"
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
    from prunebench.recovery import Budget, recover

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
