"""The registry of pruning methods: the only place that knows their names."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable

from prunebench.errors import PrunebenchError
from prunebench.methods.base import Method

_REGISTRY: dict[str, type[Method]] = {}


def register(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: make a method available under ``name``."""

    def decorate(cls: type[Method]) -> type[Method]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method name {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _discover() -> None:
    """Import every module of this package so that their ``@register`` decorators run."""
    import prunebench.methods as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")


def available_methods() -> dict[str, type[Method]]:
    _discover()
    return dict(sorted(_REGISTRY.items()))


def get_method(name: str) -> Method:
    """An instance of the method called ``name``; an unknown name lists close matches."""
    methods = available_methods()
    if name not in methods:
        close = difflib.get_close_matches(name, list(methods), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise PrunebenchError(f"unknown method {name!r}{hint} (available: {', '.join(methods) or 'none'})")
    return methods[name]()
