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

**Sharded data parallel (FSDP).** With ``parallel: fsdp`` full training (CPT) shards every decoder
layer, and the rest of the model as one more group, over the processes with torch's FSDP2
(``torch.distributed.fsdp.fully_shard``): each process keeps 1/N of the float32 weights, gradients
and AdamW states (16 bytes per parameter in all) and gathers a layer's weights only while it runs it.
Gradients are reduce-scattered and averaged, so the steps equal DDP's. The weights are loaded in full
on every process before sharding (4 bytes per parameter must fit one device). Resumable state holds
the full weights and optimizer state gathered on rank 0 (``torch.distributed.checkpoint.state_dict``)
and is broadcast from rank 0 and re-sharded on resume; after training the full weights are gathered
into a plain (unsharded) model, which rank 0 saves as a single process would.
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

    def scaler(self, device: torch.device, sharded: bool = False) -> torch.amp.GradScaler:
        """A GradScaler, enabled for fp16 only (disabled it passes gradients through unchanged);
        ``sharded``: FSDP's, which agrees over the processes whether any gradient shard overflowed."""
        if sharded:
            from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

            return ShardedGradScaler(device.type, enabled=self.loss_scaling)
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


def wrap(model: nn.Module, parallel: Parallel, device: torch.device, sharded: bool = False) -> nn.Module:
    """``model`` in DistributedDataParallel when several processes train it, else itself; ``sharded``:
    instead shard it in place with FSDP2, one group per decoder layer and one for the rest (build the
    optimizer after this: its parameters become the shards)."""
    if parallel.world == 1:
        return model
    if sharded:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        from prunebench.recovery.lora import decoder_layers

        mesh = init_device_mesh(device.type, (parallel.world,))
        for layer in decoder_layers(model):
            if any(p.requires_grad for p in layer.parameters()):  # a layer pruned to nothing has no group
                fully_shard(layer, mesh=mesh)
        return fully_shard(model, mesh=mesh)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@contextlib.contextmanager
def _fsdp_no_sync(model: nn.Module):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def no_sync(model: nn.Module, last: bool):
    """No gradient all-reduce (DDP) or reduce-scatter (FSDP) for a micro-batch before the last of a
    step, else nothing."""
    from torch.nn.parallel import DistributedDataParallel

    if last:
        return contextlib.nullcontext()
    if isinstance(model, DistributedDataParallel):
        return model.no_sync()
    if is_sharded(model):
        return _fsdp_no_sync(model)
    return contextlib.nullcontext()


_FULL_ON_RANK0 = {"full_state_dict": True, "cpu_offload": True}


def sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(weights, optimizer state) of an FSDP-sharded ``model`` gathered in full on rank 0's CPU, keyed by
    parameter name (empty dicts on the other ranks); every process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(**_FULL_ON_RANK0))


def load_sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: tuple[dict, dict]) -> None:
    """Load full (weights, optimizer state) of :func:`sharded_state` from rank 0 into the shards of
    every process (the other ranks' dicts are ignored); every process must call it."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    weights, optim = state if dist.get_rank() == 0 else ({}, {})
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, weights, options=options)
    set_optimizer_state_dict(model, optimizer, optim, options=options)


def unshard(model: nn.Module, plain: nn.Module) -> nn.Module:
    """``plain`` (a model of the same architecture, e.g. freshly loaded) holding the trained weights of
    the FSDP-sharded ``model`` on every process: gathered on rank 0, then broadcast tensor by tensor."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(**_FULL_ON_RANK0))
    with torch.no_grad():
        for name, tensor in plain.state_dict().items():
            if dist.get_rank() == 0:
                tensor.copy_(full[name])
            dist.broadcast(tensor, src=0)
    return plain


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
