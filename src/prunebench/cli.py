"""The ``prunebench`` command line: one module per subcommand in ``prunebench.commands``.

Building the parser imports no torch, transformers, pandas or matplotlib (``prunebench --help`` answers
in well under a second); each command imports what it needs in its ``run``.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from prunebench import __version__
from prunebench.commands import (
    apply,
    claims,
    eval_latency,
    eval_ppl,
    eval_zeroshot,
    import_gguf,
    info,
    methods,
    prune,
    recover,
    score,
)
from prunebench.errors import PrunebenchError

# Each module has NAME, HELP, optional GROUP ("eval"), add_arguments(parser) and run(args) -> int.
COMMANDS: list[ModuleType] = [
    info,
    methods,
    score,
    prune,
    apply,
    recover,
    import_gguf,
    eval_ppl,
    eval_zeroshot,
    eval_latency,
    claims,
]

GROUPS = {"eval": "evaluate a model (perplexity, zero-shot accuracy, latency)"}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's defaults formatter, silent where an option has no default (None, or a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.required:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prunebench",
        description="Structured pruning of LLMs, measured fairly.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"prunebench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    groups = {}
    for name, help_text in GROUPS.items():
        group_parser = sub.add_parser(
            name, help=help_text, description=help_text, formatter_class=HelpFormatter
        )
        groups[name] = group_parser.add_subparsers(dest="subcommand", required=True)
    for module in COMMANDS:
        target = groups[module.GROUP] if getattr(module, "GROUP", None) else sub
        command_parser = target.add_parser(
            module.NAME, help=module.HELP, description=module.HELP, formatter_class=HelpFormatter
        )
        module.add_arguments(command_parser)
        command_parser.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import transformers  # after parsing: --help and argument errors never pay for it

    transformers.utils.logging.disable_progress_bar()
    try:
        return args.handler(args)
    except PrunebenchError as exc:
        print(f"prunebench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
