"""Support for the workflow's thin scripts: logging into the rule's log file, clear failures."""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Iterator
from typing import Any

from prunebench.errors import PrunebenchError


@contextlib.contextmanager
def logged(snakemake: Any) -> Iterator[None]:
    """Send the job's stdout and stderr to its log; a ``PrunebenchError`` ends it with one clear line.

    Any other exception is a bug: its traceback is written into the log before it propagates (so the
    log Snakemake points to holds it), and the console gets one line saying where it is. torch gets
    exactly the job's threads: more would spin against the other jobs on the machine.
    """
    import torch

    torch.set_num_threads(max(1, int(snakemake.threads)))
    with open(snakemake.log[0], "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            yield
        except PrunebenchError as exc:
            print(f"prunebench: error: {exc}", file=log)
            log.flush()
            print(f"prunebench: error in rule {snakemake.rule}: {exc}", file=sys.__stderr__)
            sys.exit(1)
        except Exception as exc:
            traceback.print_exc(file=log)
            log.flush()
            print(
                f"prunebench: unexpected {type(exc).__name__} in rule {snakemake.rule}: {exc} "
                f"(traceback in {snakemake.log[0]})",
                file=sys.__stderr__,
            )
            raise


def params_argv(params: dict[str, Any]) -> list[str]:
    """``--param key=value`` flags for options from the config; a list becomes ``a,b,c``."""
    argv = []
    for key, value in params.items():
        text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
        argv += ["--param", f"{key}={text}"]
    return argv


def device_argv(spec: dict[str, Any]) -> list[str]:
    """``--dtype``, ``--device`` and, for a model split over GPUs, ``--gpus``/``--gpu-memory`` of a model spec."""
    argv = ["--dtype", spec["dtype"], "--device", spec["device"]]
    if spec.get("gpus", 1) > 1:
        argv += ["--gpus", str(spec["gpus"])]
        if spec.get("gpu_memory"):
            argv += ["--gpu-memory", str(spec["gpu_memory"])]
    return argv


def stream_argv(spec: dict[str, Any], method: str, step: str = "score") -> list[str]:
    """``--stream`` (and ``--device-budget``) for ``step`` (``score`` or ``prune``) when the model spec asks
    to stream and the method can stream that step (``no_streaming``, ``no_streamed_selection``)."""
    from prunebench.methods import get_method

    cls = get_method(method)
    reason = cls.no_streaming if step == "score" else cls.no_streamed_selection
    if not spec.get("stream") or reason is not None:
        return []
    return ["--stream"] + (
        ["--device-budget", str(spec["device_budget"])] if spec.get("device_budget") else []
    )
