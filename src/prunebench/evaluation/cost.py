"""Wall time and peak memory of one step (scoring, selection, recovery, a timed run).

Peak resident memory on Linux comes from ``VmHWM`` in ``/proc/self/status``, which the kernel lets a
process reset by writing ``5`` to ``/proc/self/clear_refs``; so the peak belongs to the step alone.
Where that is unavailable the lifetime peak from ``resource.getrusage`` is reported and the record says
so (``rss_scope: "process"``). On CUDA the allocator's peak allocated and reserved bytes are reset at the
start of the step and read at its end.
"""

from __future__ import annotations

import re
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process; False where the platform cannot."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """Peak resident set size in bytes: ``VmHWM`` (resettable) if readable, else ``ru_maxrss``."""
    try:
        match = re.search(r"^VmHWM:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        match = None
    if match:
        return int(match.group(1)) * 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, KiB on Linux


def current_rss_bytes() -> int:
    """Current resident set size in bytes (``VmRSS``; psutil where ``/proc`` is absent)."""
    try:
        match = re.search(r"^VmRSS:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        match = None
    if match:
        return int(match.group(1)) * 1024
    import psutil  # only off Linux; installed with accelerate

    return psutil.Process().memory_info().rss


def cuda_in_use(device: torch.device | str | None) -> bool:
    """True when ``device`` is a CUDA device and CUDA is available."""
    return device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available()


def reset_peaks(device: torch.device | str | None = None) -> bool:
    """Reset the RSS peak and, on CUDA, the allocator peaks; returns whether the RSS reset worked."""
    if cuda_in_use(device):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    return reset_peak_rss()


def read_peaks(device: torch.device | str | None = None, rss_was_reset: bool = True) -> dict:
    """Peak memory since :func:`reset_peaks` as a JSON-able dict."""
    peaks: dict = {"peak_rss_bytes": peak_rss_bytes(), "rss_scope": "step" if rss_was_reset else "process"}
    if cuda_in_use(device):
        torch.cuda.synchronize(device)
        peaks["cuda_peak_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        peaks["cuda_peak_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
    return peaks


@contextmanager
def measure_cost(step: str, device: torch.device | str | None = None) -> Iterator[dict]:
    """Measure wall time and peak memory of the ``with`` body.

    Yields a dict that is filled in when the body ends (also when it raises), e.g.::

        with measure_cost("score", device=model.device) as cost:
            scores = method.score(model, calib, config)
        result["cost"] = cost   # {"step", "wall_s", "peak_rss_bytes", "rss_scope", "device", ...}
    """
    cost: dict = {"step": step, "device": str(device) if device is not None else "cpu"}
    rss_was_reset = reset_peaks(device)
    start = time.perf_counter()
    try:
        yield cost
    finally:
        if cuda_in_use(device):
            torch.cuda.synchronize(device)
        cost["wall_s"] = time.perf_counter() - start
        cost.update(read_peaks(device, rss_was_reset))
