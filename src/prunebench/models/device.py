"""Is a torch device name valid, and is that device here? Checked before any model is loaded."""

from __future__ import annotations

import os

import torch

from prunebench.errors import PrunebenchError


def parse_device(name: str) -> torch.device:
    """``name`` as a ``torch.device``; a name torch does not know is a ``PrunebenchError``."""
    try:
        return torch.device(name)
    except (RuntimeError, TypeError):
        raise PrunebenchError(
            f"unknown device {name!r}: a torch device is cpu, cuda, cuda:N, mps or xpu"
        ) from None


def device_problem(name: str) -> str | None:
    """Why the device ``name`` cannot be used on this machine, or ``None`` when it can.

    ``name`` must be a valid device (:func:`parse_device`). CUDA devices need a torch built with CUDA
    and a visible device of that index; other accelerators (mps, xpu) their backend's availability.
    """
    device = parse_device(name)
    if device.type == "cpu":
        return None
    if device.type == "cuda":
        if not torch.backends.cuda.is_built():
            return f"this torch ({torch.__version__}) is built without CUDA"
        count = torch.cuda.device_count()
        if count == 0:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            return "no CUDA device is visible" + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible else "")
        if device.index is not None and device.index >= count:
            return f"only {count} CUDA device{'s' if count > 1 else ''} visible (cuda:0 to cuda:{count - 1})"
        return None
    backend = getattr(torch.backends, device.type, None) or getattr(torch, device.type, None)
    available = getattr(backend, "is_available", None)
    if available is None:
        return f"prunebench runs models on cpu, cuda, mps or xpu, not on {device.type}"
    return None if available() else f"no {device.type} device is available on this machine"


def check_device(name: str) -> str:
    """``name`` if it is a valid device available here; ``PrunebenchError`` naming the problem otherwise."""
    problem = device_problem(name)
    if problem is not None:
        raise PrunebenchError(f"device {name!r} cannot be used: {problem}")
    return name


def check_gpus(device: str, gpus: int) -> None:
    """``gpus`` devices of type ``device`` for one model split over them (``device_map="auto"``).

    ``PrunebenchError`` when ``gpus`` is below 1, when more than one is asked of a device that is not
    CUDA, or when this machine has fewer CUDA devices than ``gpus`` (checked before any loading).
    """
    if gpus < 1:
        raise PrunebenchError(f"gpus must be at least 1, got {gpus}")
    if gpus == 1:
        return
    if parse_device(device).type != "cuda":
        raise PrunebenchError(f"gpus: {gpus} splits a model over CUDA devices; device {device!r} is not one")
    count = torch.cuda.device_count() if torch.backends.cuda.is_built() else 0
    if gpus > count:
        raise PrunebenchError(
            f"gpus: {gpus} asks for more CUDA devices than this machine has ({count} visible"
            + (
                f", CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r}"
                if "CUDA_VISIBLE_DEVICES" in os.environ
                else ""
            )
            + ")"
        )
