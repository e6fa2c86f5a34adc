"""``recover()``: load a pruned model, train it with a variant under a budget, save the result.

Outputs in ``out_dir``: the recovered model in the pruned shape (LoRA merged) written by core's
``save_pretrained`` (so ``load_pretrained`` reads it), ``train_log.csv`` (phase, step, tokens, loss,
lr, elapsed) and ``summary.json``. Every input is checked before the first training step.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import resource
import time

import peft
import torch
import transformers

from prunebench.errors import PrunebenchError
from prunebench.files import DEFAULT_ENCODING
from prunebench.io import OutputKind, atomic_directory, check_output
from prunebench.models import load_pretrained, save_pretrained
from prunebench.models.checkpoint import load_tokenizer
from prunebench.models.context import check_context
from prunebench.models.device import check_device, check_gpus
from prunebench.plan import PruningPlan
from prunebench.recovery.config import Budget, RecoveryConfig
from prunebench.recovery.cpt import optimizer_settings, prepare_full_training
from prunebench.recovery.data import SequenceData, check_data_source, check_epochs, prepare_data
from prunebench.recovery.lora import attach_lora, lora_targets, merge_lora
from prunebench.recovery.parallel import precision_for, start, unshard
from prunebench.recovery.stream import StreamedText, is_streamed_source
from prunebench.recovery.training import (
    LOG_COLUMNS,
    Checkpointer,
    PhaseSpec,
    Progress,
    evaluate_loss,
    sharded_phase,
    train_phase,
)
from prunebench.recovery.variants import RankContext, check_parallel, get_variant

CHECKPOINT_SUBDIR = "resume"
#: What ``recover`` writes; an interrupted run leaves only its resumable state in ``out_dir/resume``.
RECOVERED_MODEL = OutputKind(
    "recovered model", ("config.json", "summary.json", "train_log.csv"), partial=(CHECKPOINT_SUBDIR,)
)


def log_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def peak_memory(device: torch.device) -> tuple[int, str]:
    """Peak memory in bytes and what it measures."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_memory_allocated"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "process_max_rss"


def final_train_loss(log: list[dict]) -> float:
    """Mean step loss over the last 10 % of the steps (at least one)."""
    tail = log[-max(1, len(log) // 10) :]
    return sum(r["loss"] for r in tail) / len(tail)


def _check_source(source: str, encoding: str) -> None:
    """Before the model is loaded: a local data file exists and decodes as ``encoding``."""
    looks_local = (
        os.sep in source or source.startswith(".") or source.endswith((".txt", ".gz", ".json", ".jsonl"))
    )
    if looks_local and not os.path.exists(source):
        raise PrunebenchError(f"data source {source!r} does not exist")
    check_data_source(source, encoding)


def _set_checkpointing(model: torch.nn.Module, on: bool) -> None:
    """Activation (gradient) checkpointing on (non-reentrant) or off. transformers 5.24 renamed the
    methods ``gradient_checkpointing_*`` to ``activation_checkpointing_*`` (the old names warn);
    earlier 5.x releases have only the old ones."""
    new = hasattr(model, "activation_checkpointing_enable")
    if on:
        kwargs = {"use_reentrant": False}
        if new:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    elif new:
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()


def _finite(loss: float, when: str) -> float:
    """A validation loss, which must be finite (a NaN or inf is never reported as a result)."""
    if not math.isfinite(loss):
        raise PrunebenchError(f"the validation loss {when} is {loss}: the model's outputs are not finite")
    return loss


def _load_plan(model_dir: str) -> PruningPlan | None:
    path = os.path.join(model_dir, "plan.json")
    if not os.path.exists(path):
        return None
    return PruningPlan.load(path)


def _phase_offsets(phases: tuple[str, ...], sources: list[str], shares: list[int], batch: int) -> list[int]:
    """Stream position where each phase starts: after the sequences earlier phases drew from the same
    source, so that CPT then LoRA on one corpus does not train twice on the same text."""
    offsets, drawn = [], dict.fromkeys(sources, 0)
    for source, steps in zip(sources, shares, strict=True):
        offsets.append(drawn[source])
        drawn[source] += steps * batch
    return offsets


def _epochs(datasets: dict, sources: list[str], shares: list[int], batch: int) -> dict[str, dict]:
    """Per source: sequences drawn, sequences in one pass, and the epochs that makes (None: a stream
    that never ended, i.e. less than one)."""
    out = {}
    for source, (train, _) in datasets.items():
        drawn = sum(steps * batch for s, steps in zip(sources, shares, strict=True) if s == source)
        out[source] = {
            "sequences": drawn,
            "sequences_per_epoch": train.windows_per_epoch,
            "epochs": train.epochs(drawn),
        }
    return out


def recover(
    model_dir: str,
    variant: str,
    data: str,
    out_dir: str,
    budget: Budget,
    seed: int = 0,
    config: RecoveryConfig | None = None,
    scores_dir: str | None = None,
    lora_data: str | None = None,
    checkpoint_dir: str | None = None,
    device: str | None = None,
    dtype: torch.dtype = torch.float32,
    show_progress: bool = True,
    encoding: str = DEFAULT_ENCODING,
    gpus: int = 1,
    gpu_memory: int | None = None,
) -> dict:
    """Recover a pruned model; returns the summary (also written to ``out_dir/summary.json``).

    ``gpus > 1`` (with ``gpu_memory`` bytes at most on each) trains the model split over CUDA devices
    (accelerate ``device_map="auto"``; batches enter on the first).

    ``data`` feeds every phase except that ``lora_data`` (default: ``data``) feeds LoRA phases (e.g.
    C4 for CPT, Alpaca for LoRA); local data files are read as ``encoding``. CPT phases stream
    ``slimpajama``, ``c4`` and local sharded corpora (:mod:`prunebench.recovery.stream`).
    ``checkpoint_dir`` (default ``out_dir/resume``) holds the resumable state; a rerun with the same
    arguments continues from it. ``dtype`` is the model's precision: the saved model's dtype and the
    autocast dtype of training (fp16 with loss scaling; float32: bf16 autocast on a GPU, none on a
    CPU), while trainable weights and optimizer states are float32 (CPT loads the weights in
    float32; LoRA keeps the frozen base in ``dtype``). Launched by ``torchrun`` with several
    processes, training is data-parallel (``config.parallel``: DDP, or FSDP sharding CPT phases, a
    ``PrunebenchError`` for a variant without one) and rank 0 writes the output. A budget that needs more
    than ``config.max_epochs`` passes over its data is refused before the model is loaded; more than
    one pass is a warning (log and ``summary.json``). ``out_dir`` must be absent, empty, an earlier
    recovered model or an interrupted run's (``PrunebenchError`` otherwise, before the model is loaded).
    """
    wall_start = time.perf_counter()
    config = config or RecoveryConfig()
    spec = get_variant(variant)
    steps = budget.to_steps(config)
    shares = spec.split_budget(steps)
    if scores_dir is not None and variant != "cfsp_lora":
        raise PrunebenchError(f"--scores is used by cfsp_lora only, not by {variant}")
    if scores_dir is not None and not os.path.isdir(scores_dir):
        raise PrunebenchError(f"scores directory {scores_dir!r} does not exist")
    check_parallel(config, spec)
    sources = [data if phase == "cpt" else (lora_data or data) for phase in spec.phases]
    for phase, source in zip(spec.phases, sources, strict=True):
        if phase != "cpt" and is_streamed_source(source) and source != "c4":
            raise PrunebenchError(
                f"data source {source!r} is a streamed pretraining corpus, read by CPT phases only; "
                f"give the {phase} phase a text or instruction source"
            )
    for source in dict.fromkeys(sources):
        _check_source(source, encoding)
    check_output(out_dir, RECOVERED_MODEL)
    check_context(model_dir, config.seqlen, "recovery seqlen")
    dev = torch.device(check_device(device) if device else ("cuda" if torch.cuda.is_available() else "cpu"))
    parallel, dev = start(dev)
    parallel.share(config.batch_size, config.micro_batch)
    precision = precision_for(dtype, dev)

    check_gpus(str(dev), gpus)
    if gpus > 1 and parallel.world > 1:
        raise PrunebenchError(
            f"a model split over {gpus} GPUs trains in one process, not in {parallel.world} data-parallel "
            "processes: give the model gpus: 1 or the recovery variant gpus: 1"
        )
    tokenizer = load_tokenizer(model_dir)
    if tokenizer is None:
        raise PrunebenchError(f"{model_dir!r} has no tokenizer: recovery needs one to read its data")
    streamed = {source for phase, source in zip(spec.phases, sources, strict=True) if phase == "cpt"}
    datasets: dict[str, tuple[SequenceData | StreamedText, SequenceData | None]] = {
        source: prepare_data(
            source,
            tokenizer,
            config.seqlen,
            seed,
            config.val_batches * config.batch_size,
            encoding,
            stream=source in streamed,
            max_epochs=config.max_epochs,
        )
        for source in dict.fromkeys(sources)
    }
    for source, (train, _) in datasets.items():
        drawn = sum(n * config.batch_size for s, n in zip(sources, shares, strict=True) if s == source)
        check_epochs(train, drawn, config.max_epochs, f"the budget of {variant} on {source!r}")
    offsets = _phase_offsets(spec.phases, sources, shares, config.batch_size)

    # Trainable weights in float32 (master weights): CPT trains every weight; LoRA's adapters are
    # float32 over a frozen base in the model's dtype.
    load_dtype = torch.float32 if "cpt" in spec.phases else dtype
    model, _ = load_pretrained(model_dir, dtype=load_dtype, device=str(dev), gpus=gpus, gpu_memory=gpu_memory)
    if "lora" in spec.phases:
        lora_targets(model, config.target_modules)
    lora_source = lora_data or data
    torch.manual_seed(seed)
    ranks, rank_notes = spec.layer_ranks(
        RankContext(model, model_dir, datasets[lora_source][0], config, scores_dir)
    )
    val = datasets[sources[-1]][1]
    val_before = (
        _finite(evaluate_loss(model, val, config.micro_batch, precision), "before training") if val else None
    )

    fingerprint = {
        "model": os.path.abspath(model_dir) if os.path.exists(model_dir) else model_dir,
        "variant": variant,
        "data": sources,
        "steps": shares,
        "seed": seed,
        "dtype": str(dtype),
        "config": config.to_dict(),
        "ranks": ranks,
        "processes": parallel.world,
    }
    checkpointer = Checkpointer(checkpoint_dir or os.path.join(out_dir, CHECKPOINT_SUBDIR), fingerprint)
    resume = checkpointer.load()
    progress = Progress(**resume["progress"]) if resume else Progress()
    resumed_from = progress.step if resume else None

    for index, (name, phase_steps) in enumerate(zip(spec.phases, shares, strict=True)):
        if index < progress.phase:
            continue
        if index > 0 and not checkpointer.load_phase_start(index, model):
            raise PrunebenchError(f"resume state lacks the starting weights of phase {index}; delete it")
        within = resume is not None and "trainable" in resume and resume["progress"]["phase"] == index
        if not within:
            torch.manual_seed(seed + index + 1_000_003 * parallel.rank)  # each process its own dropout
            progress.phase, progress.phase_step = index, 0
        if config.gradient_checkpointing:
            _set_checkpointing(model, on=True)
        trained = attach_lora(model, config, ranks) if name == "lora" else prepare_full_training(model)
        weight_decay, betas = optimizer_settings(config, name)
        train_phase(
            trained,
            datasets[sources[index]][0],
            PhaseSpec(name, phase_steps, weight_decay, betas, offsets[index]),
            config,
            progress,
            checkpointer,
            resume if within else None,
            show_progress,
            precision,
            parallel,
        )
        if sharded_phase(config, PhaseSpec(name, phase_steps, weight_decay, betas), parallel):
            model = unshard(trained, load_pretrained(model_dir, dtype=load_dtype, device=str(dev))[0])
        else:
            model = merge_lora(trained) if name == "lora" else trained
        del trained
        for param in model.parameters():
            param.requires_grad_(False)
        if config.gradient_checkpointing:
            _set_checkpointing(model, on=False)
        if index + 1 < len(spec.phases):
            if parallel.main:
                checkpointer.save_phase_start(index + 1, model)
            progress.phase, progress.phase_step = index + 1, 0
            if parallel.main:
                checkpointer.save({"progress": vars(progress).copy()})
            parallel.barrier()

    model.eval()
    val_after = (
        _finite(evaluate_loss(model, val, config.micro_batch, precision), "after training") if val else None
    )
    memory, memory_kind = peak_memory(dev)
    epochs = _epochs(datasets, sources, shares, config.batch_size)
    warnings = [
        f"{source!r}: the budget makes {e['epochs']:.2f} epochs over the data (it repeats)"
        for source, e in epochs.items()
        if e["epochs"] is not None and e["epochs"] > 1
    ]
    summary = {
        "variant": variant,
        "model": model_dir,
        "data": {
            "sources": dict(zip(spec.phases, sources, strict=True)),
            "kind": datasets[sources[-1]][0].kind,
            "dropped_records": {source: train.dropped for source, (train, _) in datasets.items()},
            "streamed": sorted(s for s, (train, _) in datasets.items() if isinstance(train, StreamedText)),
            "epochs": epochs,
        },
        "warnings": warnings,
        "budget": {
            **budget.to_dict(),
            "total_steps": steps,
            "tokens_per_step": config.batch_size * config.seqlen,
        },
        "phases": [{"name": n, "steps": s} for n, s in zip(spec.phases, shares, strict=True)],
        "steps_trained": progress.step,
        "tokens_trained": progress.tokens,
        "seed": seed,
        "hyper_parameters": config.to_dict(),
        "lora_ranks": rank_notes or None,
        "initial_train_loss": progress.log[0]["loss"],
        "final_train_loss": final_train_loss(progress.log),
        "val_loss_before": val_before,
        "val_loss_after": val_after,
        "train_time_s": round(progress.elapsed, 3),
        "wall_time_s": round(time.perf_counter() - wall_start, 3),
        "resumed_from_step": resumed_from,
        "peak_memory_bytes": memory,
        "peak_memory_kind": memory_kind,
        "device": str(dev),
        "processes": parallel.world,
        "sharded_phases": [
            n for n in spec.phases if sharded_phase(config, PhaseSpec(n, 0, 0.0, (0.0, 0.0)), parallel)
        ],
        "dtype": str(dtype).removeprefix("torch."),
        "precision": precision.describe(),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "python": platform.python_version(),
        },
    }
    if parallel.main:
        model.to(dtype)  # the saved model keeps the model's dtype
        with atomic_directory(out_dir, RECOVERED_MODEL) as staging:  # model, log and summary appear together
            save_pretrained(model, staging, tokenizer=tokenizer, plan=_load_plan(model_dir))
            (staging / "train_log.csv").write_text(log_csv(progress.log), encoding="utf-8")
            (staging / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        checkpointer.clear()  # inside out_dir it went with the old directory; elsewhere remove it now
    parallel.barrier()
    return summary
