"""`prunebench --help`: every subcommand answers, every option has help, defaults show, no heavy imports."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from prunebench.cli import build_parser
from prunebench.commands import recover

HEAVY = ("torch", "transformers", "pandas", "matplotlib", "lm_eval", "peft")


def _subcommands() -> list[tuple[list[str], argparse.ArgumentParser]]:
    """(argv prefix, parser) of every leaf subcommand, e.g. (["eval", "ppl"], its parser)."""
    out = []

    def walk(prefix: list[str], parser: argparse.ArgumentParser) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out.append((prefix, parser))
        for action in subs:
            for name, child in action.choices.items():
                walk([*prefix, name], child)

    walk([], build_parser())
    return [(argv, parser) for argv, parser in out if argv]


SUBCOMMANDS = _subcommands()


def test_the_walk_finds_every_subcommand():
    names = {" ".join(argv) for argv, _ in SUBCOMMANDS}
    assert {"info", "methods", "score", "prune", "apply", "recover", "claims"} <= names
    assert {"eval ppl", "eval zeroshot", "eval latency"} <= names


@pytest.mark.parametrize(("argv", "parser"), SUBCOMMANDS, ids=[" ".join(a) for a, _ in SUBCOMMANDS])
def test_help_of_every_subcommand_documents_every_option_and_its_default(argv, parser, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*argv, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        flag = action.option_strings[0]
        assert action.help, f"prunebench {' '.join(argv)} {flag} has no help text"
        shown = action.default not in (None, False) and not action.required
        if shown:
            default = str(action.default)
            assert f"(default: {default})" in text, f"{flag}: default {default} not shown"
        # ``(default: None)`` / ``(default: False)`` says nothing: options without a default omit it.
    assert "(default: None)" not in text and "(default: False)" not in text


def test_recover_help_names_every_registered_variant():
    from prunebench.recovery import available_variants

    assert sorted(available_variants()) == sorted(recover.VARIANTS)


def test_importing_the_cli_and_building_its_parser_imports_no_heavy_module():
    code = (
        "import sys, prunebench.cli as c; c.build_parser(); "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "", f"imported at parse time: {done.stdout.strip()}"


def test_top_level_help_is_fast_in_a_fresh_process():
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "prunebench.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "subcommands" in done.stdout or "{" in done.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert not imported & set(HEAVY), imported & set(HEAVY)
