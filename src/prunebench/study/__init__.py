"""The study's configuration and grid, used by the Snakemake workflow (and testable without it)."""

from prunebench.study.config import load_schema, validate_config
from prunebench.study.grid import Variant, variants

__all__ = ["Variant", "load_schema", "validate_config", "variants"]
