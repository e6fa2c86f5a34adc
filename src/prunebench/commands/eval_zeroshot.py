"""``prunebench eval zeroshot``: zero-shot accuracy through lm-eval on a (pruned) checkpoint."""

from __future__ import annotations

import argparse

from prunebench.commands.common import add_gpus_arguments, add_model_arguments, device_of, dtype_of, gpus_of
from prunebench.errors import PrunebenchError
from prunebench.io import OutputKind, atomic_write_json, check_output

NAME = "zeroshot"
GROUP = "eval"
HELP = "zero-shot accuracy with lm-evaluation-harness (acc and acc_norm, full results JSON)"
RESULT = OutputKind("zero-shot result", ("rows", "protocol", "results"), directory=False)


def _limit(text: str) -> int | float:
    """lm-eval's --limit: a count of examples per task, or a fraction below 1."""
    try:
        value = float(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from error
    return int(value) if value >= 1 and value.is_integer() else value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_gpus_arguments(parser)
    parser.add_argument("--tasks", required=True, help="comma-separated lm-eval task names")
    parser.add_argument("--include-path", help="a folder of local lm-eval task YAML files")
    parser.add_argument("--batch-size", type=int, default=8, help="fixed batch size")
    parser.add_argument("--limit", type=_limit, help="examples per task (a count, or a fraction below 1)")
    parser.add_argument("--seed", type=int, default=1234, help="lm-eval's python/numpy/torch/few-shot seed")
    parser.add_argument("--num-fewshot", type=int, default=0, help="few-shot examples per prompt")
    parser.add_argument("--offline", action="store_true", help="no network: set HF_*_OFFLINE first")
    parser.add_argument("--log-samples", action="store_true", help="keep per-sample records in the JSON")
    parser.add_argument(
        "--out", required=True, help="result JSON (new, or an earlier result of this command: replaced)"
    )


def run(args: argparse.Namespace) -> int:
    from prunebench.evaluation.cost import measure_cost
    from prunebench.evaluation.zeroshot import (
        ZeroShotConfig,
        evaluate_zeroshot,
        go_offline,
        parse_tasks,
        task_manager,
        validate_config,
    )
    from prunebench.models import load_pretrained

    device = device_of(args)
    spread = gpus_of(args)
    config = ZeroShotConfig(
        tasks=parse_tasks(args.tasks),
        include_path=args.include_path,
        batch_size=args.batch_size,
        limit=args.limit,
        seed=args.seed,
        num_fewshot=args.num_fewshot,
        offline=args.offline,
        log_samples=args.log_samples,
    )
    if config.offline:
        go_offline()
    validate_config(config)
    check_output(args.out, RESULT)
    manager = task_manager(config)  # unknown task names fail here, before the model is loaded
    model, tokenizer = load_pretrained(args.model, dtype=dtype_of(args), device=device, **spread)
    if tokenizer is None:
        raise PrunebenchError(f"{args.model} has no tokenizer")
    with measure_cost("eval_zeroshot", device=device) as cost:
        result = evaluate_zeroshot(model, tokenizer, config, manager=manager)
    result.update({"model": args.model, "dtype": args.dtype, "device": args.device, "cost": cost})
    atomic_write_json(args.out, result)
    for row in result["rows"]:
        stderr = f" ± {row['stderr']:.4f}" if row["stderr"] is not None else ""
        print(f"{row['task']} {row['metric']} {row['value']:.4f}{stderr} (n={row['n']})")
    return 0
