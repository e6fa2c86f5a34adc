"""The one exception type that carries a user-facing message, and the one way to print a warning."""

import sys


class PrunebenchError(Exception):
    """Bad input or an impossible request, reported to the user as one clear line (no stack trace)."""


def warn(message: str) -> None:
    """Print ``prunebench: warning: <message>`` to stderr (under Snakemake: the job's log)."""
    print(f"prunebench: warning: {message}", file=sys.stderr)
