"""prunebench: a reproducible study workflow for structured pruning of decoder-only LLMs."""

__version__ = "0.1.0"
