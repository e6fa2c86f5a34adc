"""Mixed precision and data-parallel training: torch's autocast, GradScaler and DistributedDataParallel.

**Precision.** Trainable parameters and AdamW states are float32 (master weights); the forward and
backward passes run under autocast in the model's dtype. float16 adds dynamic loss scaling
(``torch.amp.GradScaler``: the loss is scaled up before backward, gradients unscaled before clipping,
a step whose gradients overflow is skipped and the scale lowered). This is what
``accelerate``'s ``mixed_precision`` does for a single model; we call the torch pieces it wraps
directly because ``accelerate``'s state is one per process (a second recovery in the same process
could not change precision) and it refuses fp16 on a CPU, where the tests run.

**Data parallel.** Launched by ``torchrun --nproc_per_node N`` (or ``accelerate launch``), which set
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``: each process holds a replica (``DistributedDataParallel``;
NCCL on GPUs, gloo on CPUs), takes its contiguous ``batch_size / N`` share of every global batch, and
the gradients are averaged, so N processes take the same steps as one process with the same global
batch (up to the order of floating-point sums).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from prunebench.errors import PrunebenchError


@dataclass(frozen=True)
class Precision:
    """Autocast dtype (None: plain fp32) of a training run; fp16 adds loss scaling."""

    autocast: torch.dtype | None

    @property
    def loss_scaling(self) -> bool:
        return self.autocast == torch.float16

    def context(self, device: torch.device):
        """The autocast context of a forward pass on ``device``."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast)

    def scaler(self, device: torch.device) -> torch.amp.GradScaler:
        """A GradScaler, enabled for fp16 only (disabled it passes gradients through unchanged)."""
        return torch.amp.GradScaler(device.type, enabled=self.loss_scaling)

    def describe(self) -> str:
        if self.autocast is None:
            return "float32 weights and optimizer states, no autocast"
        name = str(self.autocast).removeprefix("torch.")
        scaling = ", dynamic loss scaling" if self.loss_scaling else ""
        return f"float32 trainable weights and optimizer states, {name} autocast{scaling}"


def precision_for(dtype: torch.dtype, device: torch.device) -> Precision:
    """The model's dtype decides the autocast dtype; float32 keeps bf16 autocast on a GPU (as before)
    and none on a CPU."""
    if dtype in (torch.float16, torch.bfloat16):
        return Precision(dtype)
    return Precision(torch.bfloat16 if device.type == "cuda" else None)


@dataclass(frozen=True)
class Parallel:
    """This process's place in a data-parallel run (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, batch_size: int, micro_batch: int) -> int:
        """Sequences per process and step; a batch that does not split is a ``PrunebenchError``."""
        if batch_size % (self.world * micro_batch):
            raise PrunebenchError(
                f"batch_size {batch_size} must be a multiple of {self.world} processes x micro_batch_size "
                f"{micro_batch} for data-parallel training"
            )
        return batch_size // self.world

    def sum(self, value: float, device: torch.device) -> float:
        """``value`` summed over the processes (itself when alone)."""
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return float(tensor)

    def gather(self, obj: object) -> list[object]:
        """Every process's ``obj``, in rank order, on rank 0 (an empty list elsewhere)."""
        if self.world == 1:
            return [obj]
        out: list[object] = [None] * self.world if self.main else []
        dist.gather_object(obj, out if self.main else None, dst=0)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def launched_world() -> int:
    """Processes of the run as torchrun announces them (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def start(device: torch.device) -> tuple[Parallel, torch.device]:
    """Join the process group when launched by torchrun; returns this process's place and device
    (``cuda:LOCAL_RANK`` on GPUs). A run alone returns ``Parallel()`` and ``device`` unchanged."""
    world = launched_world()
    if world == 1:
        return Parallel(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise PrunebenchError(
                f"process {rank} needs GPU {local} but {torch.cuda.device_count()} are visible"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Parallel(rank, world, local), device


def wrap(model: nn.Module, parallel: Parallel, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel when several processes train it, else itself."""
    if parallel.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def no_sync(model: nn.Module, last: bool):
    """No gradient all-reduce for a micro-batch before the last of a step (DDP), else nothing."""
    from torch.nn.parallel import DistributedDataParallel

    if last or not isinstance(model, DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper."""
    return getattr(model, "module", model)


def torchrun_argv(processes: int, cli_argv: list[str]) -> list[str]:
    """The command that runs ``prunebench <cli_argv>`` in ``processes`` data-parallel processes on
    this node (torchrun's standalone rendezvous: a free port, no other node)."""
    import sys

    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "prunebench.cli",
        *cli_argv,
    ]
