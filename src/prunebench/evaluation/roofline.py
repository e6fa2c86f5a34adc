"""Roofline context for latency cells: work per phase, measured device peaks, ideal speed-ups.

Work per cell (``batch`` sequences, ``prompt`` tokens each, greedy decode through a KV cache):

- **Prefill FLOPs**: ``batch * (prompt * L + H + A * prompt * (prompt + 1) / 2)``, with ``L`` = 2 FLOPs per
  weight of every linear layer except the LM head, ``H`` = 2 per LM-head weight (only the last position
  goes through it, as in ``generate``), ``A`` = attention FLOPs per query token per context token,
  ``4 * head_dim * query_heads`` summed over the layers that keep attention (causal: token ``t`` sees
  ``t`` tokens).
- **Decode FLOPs per step**: ``batch * (L + H + A * context)``.
- **Decode bytes per step**: the weights read once per step (every parameter, except that an untied input
  embedding table is only indexed: its ``batch`` rows count) plus the KV cache read,
  ``batch * context * KV bytes per token``. ``context`` is the mean over the decode phase,
  ``prompt + new_tokens / 2``.
- **Prefill bytes**: the weights read once plus the KV cache written, ``batch * prompt * KV bytes per token``.

A phase's roofline time is ``max(FLOPs / peak FLOP rate, bytes / peak bandwidth)`` (Williams, Waterman
and Patterson, "Roofline", CACM 2009); it is ``bound`` by compute or memory, whichever term is larger.
The **ideal speed-up** of a pruned model in a cell is the ratio of the base's roofline time to the
pruned model's: for a compute-bound prefill this is the ratio of FLOPs, for a bandwidth-bound batch-1
decode the ratio of bytes. The peaks are measured in the same job (:func:`measure_peaks`): a large tensor
copy (bytes read + written per second) and a square matrix product in the model's dtype (``2 n^3`` FLOPs
per product), medians over repeats. They are what this code reaches, not the data-sheet figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from prunebench.evaluation.cost import cuda_in_use
from prunebench.models import get_adapter


@dataclass(frozen=True)
class Work:
    """FLOPs and bytes of one phase of one run."""

    flops: float
    bytes: float


def _linear_weights(model: nn.Module) -> tuple[int, int]:
    """(weights of all linear layers except the LM head, weights of the LM head)."""
    head = get_adapter(model).lm_head
    total = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    return total - head.weight.numel(), head.weight.numel()


def _attention_flops_per_context_token(model: nn.Module) -> int:
    adapter = get_adapter(model)
    return sum(
        4 * adapter.head_dim * adapter.kv_heads(i) * adapter.group_size for i in range(adapter.num_layers)
    )


def weights_read_bytes(model: nn.Module, batch: int) -> int:
    """Parameter bytes one forward step reads: all, except an untied input embedding table (its rows only)."""
    adapter = get_adapter(model)
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    if adapter.tied_embeddings:
        return total
    table = adapter.embed_tokens.weight
    return total - table.numel() * table.element_size() + batch * table.shape[1] * table.element_size()


def prefill_work(model: nn.Module, batch: int, prompt: int, kv_bytes_per_token: int) -> Work:
    """FLOPs and bytes of the prefill of ``batch`` prompts of ``prompt`` tokens (see the module docstring)."""
    linear, head = _linear_weights(model)
    attention = _attention_flops_per_context_token(model)
    flops = batch * (2 * prompt * linear + 2 * head + attention * prompt * (prompt + 1) / 2)
    return Work(float(flops), float(weights_read_bytes(model, batch) + batch * prompt * kv_bytes_per_token))


def decode_work(model: nn.Module, batch: int, context: float, kv_bytes_per_token: int) -> Work:
    """FLOPs and bytes of one decode step of ``batch`` sequences attending to ``context`` cached tokens."""
    linear, head = _linear_weights(model)
    attention = _attention_flops_per_context_token(model)
    flops = batch * (2 * linear + 2 * head + attention * context)
    return Work(float(flops), float(weights_read_bytes(model, batch) + batch * context * kv_bytes_per_token))


def roofline_seconds(work: Work, peaks: dict) -> tuple[float, str]:
    """``(max(FLOPs / peak rate, bytes / peak bandwidth), "compute" or "memory")``."""
    compute = work.flops / peaks["flops_per_s"]
    memory = work.bytes / peaks["bytes_per_s"]
    return (compute, "compute") if compute >= memory else (memory, "memory")


def _median_seconds(action, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        if cuda_in_use(device):
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        action()
        if cuda_in_use(device):
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _timed_copy(size: int, repeats: int, device: torch.device) -> float:
    source = torch.empty(size // 4, dtype=torch.float32, device=device).uniform_()
    target = torch.empty_like(source)
    target.copy_(source)
    return _median_seconds(lambda: target.copy_(source), repeats, device)


def _timed_gemm(n: int, dtype: torch.dtype, repeats: int, device: torch.device) -> float:
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    return _median_seconds(lambda: torch.mm(a, b), repeats, device)


def measure_peaks(device: torch.device, dtype: torch.dtype, repeats: int = 10) -> dict:
    """Peak memory bandwidth (tensor copy) and FLOP rate (square GEMM) this process reaches on ``device``.

    Sizes: a copy of 1 GiB on GPU, 64 MiB on CPU (beyond the last-level cache of the CPUs we run on);
    a GEMM of ``n = 8192`` on GPU, ``n = 1024`` on CPU, in ``dtype``. One untimed run first, then the
    median of ``repeats``. Returns bytes/s (read + written), FLOP/s and the sizes used.
    """
    gpu = cuda_in_use(device)
    copy_bytes = (1 << 30) if gpu else (64 << 20)
    n = 8192 if gpu else 1024
    with torch.inference_mode():
        copy_s = _timed_copy(copy_bytes, repeats, device)
        gemm_s = _timed_gemm(n, dtype, repeats, device)
    return {
        "bytes_per_s": 2 * copy_bytes / copy_s,
        "flops_per_s": 2 * n**3 / gemm_s,
        "copy_bytes": copy_bytes,
        "gemm_n": n,
        "gemm_dtype": str(dtype).removeprefix("torch."),
        "repeats": repeats,
        "method": "median of tensor copy (2 x bytes per copy) and torch.mm (2 n^3 FLOPs) in this process",
    }
