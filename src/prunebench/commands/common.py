"""Argument helpers shared by several subcommands.

Nothing here imports torch at module level: ``prunebench --help`` builds every parser, so the parsers'
modules stay light and the heavy imports happen in each command's ``run``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from prunebench.errors import PrunebenchError
from prunebench.files import DEFAULT_ENCODING, check_encoding

if TYPE_CHECKING:
    import torch

DTYPES = ("bfloat16", "float16", "float32")  # names of torch dtypes


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model directory or Hugging Face Hub id")
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="weights' dtype")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def add_gpus_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gpus", type=int, default=1, help="split the model over this many CUDA devices (device_map=auto)"
    )
    parser.add_argument(
        "--gpu-memory", metavar="SIZE", help="with --gpus: at most this much on each, e.g. 70GiB"
    )


def gpus_of(args: argparse.Namespace) -> dict:
    """``gpus`` and ``gpu_memory`` (bytes) for :func:`~prunebench.models.load_pretrained`, checked
    against ``--device`` and this machine before any loading."""
    from prunebench.models.device import check_gpus
    from prunebench.models.streaming import parse_bytes

    check_gpus(args.device, args.gpus)
    if args.gpu_memory is not None and args.gpus == 1:
        raise PrunebenchError("--gpu-memory limits a model split over GPUs: give --gpus N (N > 1) with it")
    memory = None if args.gpu_memory is None else parse_bytes(args.gpu_memory, "--gpu-memory")
    return {"gpus": args.gpus, "gpu_memory": memory}


def add_encoding_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoding", default=DEFAULT_ENCODING, help="encoding of local text files")


def dtype_of(args: argparse.Namespace) -> torch.dtype:
    import torch

    return getattr(torch, args.dtype)


def device_of(args: argparse.Namespace) -> str:
    """``--device`` after checking that torch knows it and this machine has it (before any loading)."""
    from prunebench.models.device import check_device

    return check_device(args.device)


def encoding_of(args: argparse.Namespace) -> str:
    return check_encoding(args.encoding)


def parse_params(pairs: list[str] | None) -> dict[str, str]:
    """``["key=value", ...]`` from repeated ``--param`` flags into a dict (values stay strings)."""
    params = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PrunebenchError(f"--param expects key=value, got {pair!r}")
        params[key] = value
    return params


def check_ratio(ratio: float) -> float:
    if not 0 <= ratio < 1:
        raise PrunebenchError(f"ratio must be in [0, 1), got {ratio}")
    return ratio


def add_stream_arguments(parser: argparse.ArgumentParser, help_stream: str) -> None:
    """``--stream`` (what it does for this command: ``help_stream``) and ``--device-budget SIZE``."""
    parser.add_argument("--stream", action="store_true", help=help_stream)
    parser.add_argument(
        "--device-budget",
        metavar="SIZE",
        help="with --stream: device memory for one layer plus the calibration states kept there, "
        "e.g. 40GiB (the rest wait in CPU memory)",
    )


def device_budget_of(args: argparse.Namespace) -> int | None:
    """``--device-budget`` in bytes (``None`` when not given); a malformed size is a ``PrunebenchError``."""
    from prunebench.models.streaming import parse_bytes

    return None if args.device_budget is None else parse_bytes(args.device_budget, "--device-budget")


def model_step_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options ``score`` and ``prune`` hand to their step: dtype, device, GPUs, text encoding and
    streaming (``--stream``, ``--device-budget`` in bytes)."""
    return {
        "dtype": dtype_of(args),
        "device": device_of(args),
        **gpus_of(args),
        "encoding": encoding_of(args),
        "stream": args.stream,
        "device_budget": device_budget_of(args),
    }
