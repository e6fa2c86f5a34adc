"""The training loop shared by every recovery variant, with atomic resumable checkpoints.

One *phase* trains the parameters that require gradients (LoRA adapters, or all weights for CPT)
with AdamW, a warm-up + linear/cosine schedule (transformers' ``get_scheduler``), gradient
accumulation over micro-batches and gradient clipping. fp32 on CPU; bf16 autocast on GPU.

Every ``save_every`` steps the trainable weights, optimizer, scheduler, RNG states, progress and the
log so far are written to ``resume.pt`` (temp file + ``os.replace``). A rerun with the same
configuration finds it and continues; on CPU the result equals an uninterrupted run.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import get_scheduler

from prunebench.errors import PrunebenchError
from prunebench.io import atomic_file
from prunebench.recovery.config import RecoveryConfig
from prunebench.recovery.data import IGNORE, SequenceData
from prunebench.recovery.parallel import (
    Parallel,
    Precision,
    load_sharded_state,
    no_sync,
    sharded_state,
    wrap,
)
from prunebench.recovery.stream import StreamedText

LOG_COLUMNS = ("phase", "step", "tokens", "loss", "lr", "elapsed")
FLOAT32 = Precision(None)
ALONE = Parallel()


@dataclass
class Progress:
    """Where training stands: carried across phases, saved in checkpoints."""

    phase: int = 0
    phase_step: int = 0  # optimizer steps done in the current phase
    step: int = 0  # optimizer steps done in total
    tokens: int = 0  # input tokens fed (padding excluded)
    elapsed: float = 0.0  # training seconds, summed over interrupted runs
    log: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class PhaseSpec:
    """One training phase: its name (``lora`` / ``cpt``), length, AdamW settings and where in its
    data stream it starts."""

    name: str
    steps: int
    weight_decay: float
    betas: tuple[float, float]
    offset: int = 0  # stream position of the phase's first sequence


class Checkpointer:
    """Resumable state in one directory: ``resume.pt`` and per-phase starting weights."""

    def __init__(self, directory: str, fingerprint: dict):
        self.directory = directory
        self.fingerprint = fingerprint
        self.path = os.path.join(directory, "resume.pt")

    def load(self) -> dict | None:
        """The saved state, or None; a checkpoint from another configuration is an error."""
        if not os.path.exists(self.path):
            return None
        # Memory-mapped: a process that does not read the weights (FSDP: ranks > 0) does not hold them.
        state = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
        if state.get("fingerprint") != self.fingerprint:
            raise PrunebenchError(
                f"{self.path} is a checkpoint of a different recovery run (other model, variant, data, "
                "budget, seed or options); delete it or rerun with the same settings"
            )
        return state

    def save(self, state: dict) -> None:
        """Write the resumable state atomically; a full disk is one ``PrunebenchError`` and leaves no
        temporary file and no folder it created (``atomic_file``)."""
        with atomic_file(self.path) as tmp:
            torch.save({"fingerprint": self.fingerprint, **state}, tmp)

    def phase_weights_path(self, phase: int) -> str:
        return os.path.join(self.directory, f"phase{phase}-start.safetensors")

    def save_phase_start(self, phase: int, model: nn.Module) -> None:
        """The full weights a later phase starts from (after CPT, before LoRA), written atomically."""
        with atomic_file(self.phase_weights_path(phase)) as tmp:
            tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
            save_file(_untie(tensors), str(tmp))

    def load_phase_start(self, phase: int, model: nn.Module) -> bool:
        path = self.phase_weights_path(phase)
        if not os.path.exists(path):
            return False
        model.load_state_dict(load_file(path), strict=False)
        return True

    def clear(self) -> None:
        """Remove the resumable state once the final model is written."""
        for name in os.listdir(self.directory) if os.path.isdir(self.directory) else []:
            if name == "resume.pt" or name.endswith("-start.safetensors"):
                os.unlink(os.path.join(self.directory, name))
        if os.path.isdir(self.directory) and not os.listdir(self.directory):
            os.rmdir(self.directory)


def _untie(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses shared storage (tied embeddings): store independent copies."""
    seen: set[int] = set()
    out = {}
    for key, value in tensors.items():
        ptr = value.data_ptr()
        out[key] = value.clone() if ptr in seen else value
        seen.add(ptr)
    return out


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if params.keys() != saved.keys():
        raise PrunebenchError("the resume checkpoint's trainable parameters do not match the model")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(saved[name])


def rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def evaluate_loss(model: nn.Module, data: SequenceData, batch_size: int, precision: Precision) -> float:
    """Mean next-token NLL over the label tokens of every example of ``data``, forward passes under
    ``precision``'s autocast."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in data.ordered_batches(batch_size):
        batch = _to(batch, device)
        with precision.context(device):
            loss = model(**batch).loss.float()
        n = int((batch["labels"][:, 1:] != IGNORE).sum())
        total += float(loss) * n
        count += n
    model.train(was_training)
    return total / count if count else float("nan")


def nonfinite_loss_message(model: nn.Module, batch: dict[str, torch.Tensor], loss: float, step: int) -> str:
    """Why the training loss of ``step`` is ``loss`` (NaN or inf), from the weights that gave it.

    Non-finite weights are named (corrupt from the start at step 1, diverged later); a batch with no
    target token is a data problem; finite weights at step 1 mean the forward pass itself overflows.
    Only a later step with finite weights points at the learning rate.
    """
    bad = next((n for n, p in model.named_parameters() if not bool(p.detach().isfinite().all())), None)
    if bad is not None and step == 1:
        return f"training loss is {loss} at step 1: weight {bad} holds non-finite values before any update"
    if bad is not None:
        return (
            f"training loss became {loss} at step {step}: weight {bad} became non-finite after "
            f"{step - 1} optimizer steps (training diverged; lower the lr)"
        )
    if not bool((batch["labels"][:, 1:] != IGNORE).any()):
        return f"training loss is {loss} at step {step}: the batch has no target token (every label masked)"
    if step == 1:
        return (
            f"training loss is {loss} at step 1, before any update and with finite weights: the forward "
            "pass overflows (try float32 weights)"
        )
    return f"training loss became {loss} at step {step} with finite weights; lower the lr"


def sharded_phase(config: RecoveryConfig, phase: PhaseSpec, parallel: Parallel) -> bool:
    """Whether ``phase`` shards the model (FSDP): full training under ``parallel: fsdp`` with several
    processes; LoRA phases, and a run alone, keep a whole replica per process."""
    return config.parallel == "fsdp" and phase.name == "cpt" and parallel.world > 1


def train_phase(
    model: nn.Module,
    data: SequenceData | StreamedText,
    phase: PhaseSpec,
    config: RecoveryConfig,
    progress: Progress,
    checkpointer: Checkpointer,
    resume: dict | None = None,
    show_progress: bool = True,
    precision: Precision = FLOAT32,
    parallel: Parallel = ALONE,
) -> None:
    """Train ``phase.steps`` optimizer steps of the trainable parameters of ``model`` in place.

    ``progress`` is updated (and logged per step); ``resume`` is the checkpoint of this phase to
    continue from, if any. Forward passes run under ``precision`` (fp16: loss scaling). With several
    processes (``parallel``) each takes its share of every global batch, gradients are averaged by
    DistributedDataParallel (or FSDP2, which shards ``model`` in place: see :func:`sharded_phase`;
    the caller gathers it back with :func:`~prunebench.recovery.parallel.unshard`), the logged loss
    and tokens cover the global batch, and only rank 0 writes checkpoints.
    """
    from prunebench.recovery.cpt import parameter_groups

    device = next(model.parameters()).device
    sharded = sharded_phase(config, phase, parallel)
    wrapped = wrap(model, parallel, device, sharded)  # before the optimizer: FSDP swaps in the shards
    optimizer = torch.optim.AdamW(
        parameter_groups(wrapped, phase.weight_decay), lr=config.lr, betas=phase.betas
    )
    scheduler = get_scheduler(
        config.schedule,
        optimizer,
        num_warmup_steps=math.ceil(config.warmup_ratio * phase.steps),
        num_training_steps=phase.steps,
    )
    scaler = precision.scaler(device, sharded)
    if resume is not None:
        if sharded:
            load_sharded_state(wrapped, optimizer, (resume["trainable"], resume["optimizer"]))
        else:
            load_trainable_state(model, resume["trainable"])
            optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        if "scaler" in resume:
            scaler.load_state_dict(resume["scaler"])
        set_rng_state(resume["rng"][parallel.rank])
    params = [p for group in optimizer.param_groups for p in group["params"]]
    share = parallel.share(config.batch_size, config.micro_batch)
    n_micro = share // config.micro_batch
    wrapped.train()
    bar = tqdm(
        total=phase.steps,
        initial=progress.phase_step,
        desc=phase.name,
        disable=not show_progress or not parallel.main,
        leave=False,
    )
    started = time.perf_counter() - progress.elapsed
    while progress.phase_step < phase.steps:
        start = phase.offset + progress.phase_step * config.batch_size + parallel.rank * share
        batch = data.stream_batch(start, share)
        lr = scheduler.get_last_lr()[0]
        loss_sum = 0.0
        for m in range(n_micro):
            part = {k: v[m * config.micro_batch : (m + 1) * config.micro_batch] for k, v in batch.items()}
            part = _to(part, device)
            with no_sync(wrapped, last=m == n_micro - 1):
                with precision.context(device):
                    loss = wrapped(**part).loss
                scaler.scale(loss / n_micro).backward()
            loss_sum += float(loss.detach())
        loss_value = parallel.sum(loss_sum / n_micro, device) / parallel.world
        if not math.isfinite(loss_value):  # before the update, so the weights are those that gave it
            raise PrunebenchError(nonfinite_loss_message(model, batch, loss_value, progress.step + 1))
        scaler.unscale_(optimizer)
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        progress.phase_step += 1
        progress.step += 1
        progress.tokens += int(parallel.sum(float(batch["attention_mask"].sum()), device))
        progress.elapsed = time.perf_counter() - started
        progress.log.append(
            {
                "phase": phase.name,
                "step": progress.step,
                "tokens": progress.tokens,
                "loss": loss_value,
                "lr": lr,
                "elapsed": round(progress.elapsed, 3),
            }
        )
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}")
        if progress.phase_step % config.save_every == 0 and progress.phase_step < phase.steps:
            rngs = parallel.gather(rng_state())  # each process's dropout stream
            if sharded:  # gathered in full on rank 0 (a collective: every process takes part)
                weights, optim = sharded_state(wrapped, optimizer)
            elif parallel.main:
                weights, optim = trainable_state(model), optimizer.state_dict()
            if parallel.main:
                checkpointer.save(
                    {
                        "progress": vars(progress).copy(),
                        "trainable": weights,
                        "optimizer": optim,
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "rng": rngs,
                    }
                )
            parallel.barrier()
    bar.close()
