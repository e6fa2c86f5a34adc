"""Pruning methods: one module each, registered by name (see registry.py)."""

from prunebench.methods.base import Method, MethodConfig, Scores
from prunebench.methods.registry import available_methods, get_method, register

__all__ = ["Method", "MethodConfig", "Scores", "available_methods", "get_method", "register"]
