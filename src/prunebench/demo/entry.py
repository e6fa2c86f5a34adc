"""Run a demo build step as a command: a :class:`PrunebenchError` becomes one line on stderr, exit 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

from prunebench.errors import PrunebenchError


def run(main: Callable[[], object]) -> None:
    """Call ``main()``; turn a PrunebenchError into ``error: message`` on stderr and exit status 2."""
    try:
        main()
    except PrunebenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
