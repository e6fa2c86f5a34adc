"""``prunebench claims``: papers' qualitative claims checked against a finished study's results."""

from __future__ import annotations

import argparse
from pathlib import Path

from prunebench.errors import PrunebenchError

NAME = "claims"
HELP = "check papers' claims (a YAML list) against a finished study's results, with their uncertainty"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the study's config YAML")
    parser.add_argument("--claims", required=True, help="claims YAML, e.g. resources/claims/papers.yaml")
    parser.add_argument("--model", help="the study's model to check (default: its only model)")
    parser.add_argument(
        "--results", help="the study's results folder (default: results/<study>, the config's study name)"
    )
    parser.add_argument("--out", help="write the Markdown table here instead of printing it")


def run(args: argparse.Namespace) -> int:
    import yaml

    from prunebench.io import atomic_write_text
    from prunebench.report.claims import evaluate, load_claims, markdown, study_results
    from prunebench.study import validate_config

    try:
        text = Path(args.config).read_text()
    except OSError as exc:
        raise PrunebenchError(f"cannot read {args.config}: {exc.strerror}") from None
    config = validate_config(yaml.safe_load(text))
    model = args.model or next(iter(config["models"]))
    if args.model is None and len(config["models"]) > 1:
        raise PrunebenchError(
            f"the study has several models; choose one with --model ({', '.join(config['models'])})"
        )
    table = markdown(evaluate(load_claims(args.claims), study_results(config, model, args.results)))
    if args.out:
        atomic_write_text(args.out, table)
    else:
        print(table, end="")
    return 0
