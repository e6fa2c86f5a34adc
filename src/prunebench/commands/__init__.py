"""Subcommands of the ``prunebench`` CLI, one module each."""
