"""Train the demo Llama from scratch on the train split of the demo corpus.

Plain next-token training: random non-overlapping windows of ``seqlen`` tokens (a fresh random offset
and order every epoch, all drawn from the seed), AdamW, gradient clipping, float32, and a
warm-up / stable / decay ("WSD") learning-rate schedule: linear warm-up, constant peak, then a linear
decay to ``min_lr_rate`` of the peak over the last ``decay_frac`` of the run. The length of the run
is either the token budget (deterministic) or, with a wall-clock budget, chosen when
``1 - decay_frac`` of the minutes have passed from the measured speed so that the decay ends on time;
the step where the decay began is recorded, and ``decay_start`` replays it exactly. Every ``eval_every`` steps the full
validation split is scored; the weights with the best validation loss so far are exported to the
model folder (early stopping on validation; the test split is never looked at), and a resumable
checkpoint is written. A wall-clock budget (``minutes``) stops training early, keeping what is done.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from prunebench.demo.atomic import atomic_path, write_text
from prunebench.demo.model import demo_config, save_model
from prunebench.demo.perplexity import mean_nll, windows
from prunebench.errors import PrunebenchError


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (all recorded in ``training.json``)."""

    max_tokens: int
    minutes: float | None = None
    seqlen: int = 256
    batch_size: int = 8
    lr: float = 1.5e-3
    min_lr_rate: float = 0.02
    warmup_steps: int = 50
    decay_frac: float = 0.2
    decay_start: int | None = None
    weight_decay: float = 0.1
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every: int = 100
    seed: int = 0
    threads: int = 1

    @property
    def total_steps(self) -> int:
        """Optimizer steps that consume ``max_tokens`` (the most the run can take)."""
        return self.max_tokens // (self.seqlen * self.batch_size)

    @property
    def planned_decay_start(self) -> int:
        """The step where the decay starts when the token budget, not the clock, ends the run."""
        if self.decay_start is not None:
            return self.decay_start
        return round(self.total_steps * (1 - self.decay_frac))

    def check(self) -> None:
        """Reject impossible settings before any work."""
        if self.total_steps <= self.warmup_steps:
            raise PrunebenchError(
                f"max_tokens={self.max_tokens} gives {self.total_steps} steps, "
                f"not more than warmup_steps={self.warmup_steps}"
            )
        if self.minutes is not None and self.minutes <= 0:
            raise PrunebenchError(f"minutes must be positive, got {self.minutes}")
        if not 0 < self.decay_frac < 1:
            raise PrunebenchError(f"decay_frac must be in (0, 1), got {self.decay_frac}")
        if self.decay_start is not None and not self.warmup_steps <= self.decay_start < self.total_steps:
            raise PrunebenchError(f"decay_start={self.decay_start} must lie in [warmup_steps, total_steps)")


def wsd_factor(step: int, cfg: TrainConfig, decay_start: int | None, end: int) -> float:
    """Learning-rate multiplier at ``step``: warm-up, constant 1, then linear decay ending at ``end``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if decay_start is None or step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start) / max(1, end - decay_start))
    return 1.0 - (1.0 - cfg.min_lr_rate) * progress


def token_stream(text: str, tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """Tokenize a split; documents (separated by a blank line) are joined with the EOS token."""
    ids: list[int] = []
    for doc in (d for d in text.split("\n\n") if d.strip()):
        if ids:
            ids.append(tokenizer.eos_token_id)
        ids.extend(tokenizer(doc.strip("\n") + "\n", add_special_tokens=False)["input_ids"])
    return torch.tensor(ids, dtype=torch.long)


class WindowSampler:
    """Deterministic stream of training windows: every epoch a random offset and a random order."""

    def __init__(self, n_tokens: int, seqlen: int, seed: int) -> None:
        if n_tokens < 2 * seqlen:
            raise PrunebenchError(f"train split has {n_tokens} tokens, too few for windows of {seqlen}")
        self.n_tokens, self.seqlen, self.seed = n_tokens, seqlen, seed
        self._epochs: list[torch.Tensor] = []

    def _epoch(self, e: int) -> torch.Tensor:
        while len(self._epochs) <= e:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + len(self._epochs))
            offset = int(torch.randint(self.seqlen, (1,), generator=g))
            n = (self.n_tokens - offset) // self.seqlen
            self._epochs.append(offset + self.seqlen * torch.randperm(n, generator=g))
        return self._epochs[e]

    def starts(self, first: int, count: int) -> torch.Tensor:
        """Start positions of windows ``first .. first+count-1`` of the infinite stream."""
        out, got, e, index = [], 0, 0, first
        while index >= len(self._epoch(e)):
            index -= len(self._epoch(e))
            e += 1
        while got < count:
            take = self._epoch(e)[index : index + count - got]
            out.append(take)
            got += take.numel()
            e, index = e + 1, 0
        return torch.cat(out)


def _log(record: dict) -> None:
    print(json.dumps(record), flush=True)


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.beta2))


def train(
    train_text: str,
    validation_text: str,
    tokenizer: PreTrainedTokenizerBase,
    cfg: TrainConfig,
    out_dir: str | Path,
    checkpoint: str | Path,
    command: str = "",
    model_config: LlamaConfig | None = None,
) -> dict:
    """Train (resuming from ``checkpoint`` when it exists), export the best model to ``out_dir``.

    ``model_config`` defaults to :func:`demo_config` (tests pass a tiny one).

    Returns the summary also written to ``out_dir/training.json``.
    """
    cfg.check()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    train_ids = token_stream(train_text, tokenizer)
    val_windows = windows(token_stream(validation_text, tokenizer), cfg.seqlen)
    sampler = WindowSampler(train_ids.numel(), cfg.seqlen, cfg.seed)
    model = LlamaForCausalLM(model_config or demo_config(len(tokenizer), tokenizer.eos_token_id))
    opt = _optimizer(model, cfg)
    state = {
        "step": 0,
        "elapsed_s": 0.0,
        "best_val_nll": math.inf,
        "best_step": 0,
        "history": [],
        "decay_start": None,
        "end_step": cfg.total_steps,
    }
    checkpoint = Path(checkpoint)
    if checkpoint.is_file():
        saved = torch.load(checkpoint, weights_only=True)
        if saved["config"] != asdict(cfg) | {"minutes": saved["config"]["minutes"]}:
            raise PrunebenchError(f"checkpoint {checkpoint} was made with other settings: {saved['config']}")
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        state = saved["state"]
        _log({"event": "resumed", "step": state["step"]})
    n_params = sum(p.numel() for p in model.parameters())
    _log({"event": "start", "params": n_params, "train_tokens": train_ids.numel(), **asdict(cfg)})
    model.train()
    t0, tokens_per_step = time.monotonic() - state["elapsed_s"], cfg.seqlen * cfg.batch_size
    t_log, step_log = time.monotonic(), state["step"]
    stopped_by_clock = False
    t_resume, step_resume = time.monotonic(), state["step"]
    while state["step"] < state["end_step"]:
        elapsed = time.monotonic() - t0
        if cfg.minutes is not None and elapsed >= cfg.minutes * 60:
            stopped_by_clock = True
            break
        if state["decay_start"] is None:
            _maybe_start_decay(
                state, cfg, elapsed, (state["step"] - step_resume) / (time.monotonic() - t_resume)
            )
        lr = cfg.lr * wsd_factor(state["step"], cfg, state["decay_start"], state["end_step"])
        for group in opt.param_groups:
            group["lr"] = lr
        starts = sampler.starts(state["step"] * cfg.batch_size, cfg.batch_size)
        batch = train_ids[starts[:, None] + torch.arange(cfg.seqlen)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["step"] += 1
        if state["step"] % 10 == 0:
            now = time.monotonic()
            rate = (state["step"] - step_log) * tokens_per_step / (now - t_log)
            _log(
                {
                    "step": state["step"],
                    "loss": round(loss.item(), 4),
                    "lr": lr,
                    "tokens": state["step"] * tokens_per_step,
                    "tok_per_s": round(rate),
                    "elapsed_s": round(now - t0),
                }
            )
            t_log, step_log = now, state["step"]
        if state["step"] % cfg.eval_every == 0 or state["step"] == state["end_step"]:
            _evaluate(model, val_windows, state, tokenizer, out_dir)
            state["elapsed_s"] = time.monotonic() - t0
            _checkpoint(checkpoint, model, opt, state, cfg)
    if state["history"] == [] or state["history"][-1]["step"] != state["step"]:
        _evaluate(model, val_windows, state, tokenizer, out_dir)
    state["elapsed_s"] = time.monotonic() - t0
    _checkpoint(checkpoint, model, opt, state, cfg)
    summary = {
        "config": asdict(cfg),
        "parameters": n_params,
        "train_tokens_in_split": train_ids.numel(),
        "steps_run": state["step"],
        "tokens_seen": state["step"] * tokens_per_step,
        "stopped_by_clock": stopped_by_clock,
        "decay_start": state["decay_start"],
        "end_step": state["end_step"],
        "exported_step": state["best_step"],
        "exported_tokens_seen": state["best_step"] * tokens_per_step,
        "best_validation_nll": state["best_val_nll"],
        "elapsed_s": round(state["elapsed_s"], 1),
        "torch": torch.__version__,
        "threads": cfg.threads,
        "validation_history": state["history"],
        "command": command,
    }
    write_text(Path(out_dir) / "training.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _evaluate(model, val_windows, state, tokenizer, out_dir) -> None:
    model.eval()
    nll, _ = mean_nll(model, val_windows)
    model.train()
    state["history"].append(
        {"step": state["step"], "val_nll": round(nll, 5), "val_ppl": round(math.exp(nll), 3)}
    )
    improved = nll < state["best_val_nll"]
    if improved:
        state["best_val_nll"], state["best_step"] = nll, state["step"]
        save_model(model, tokenizer, out_dir)
    _log(
        {
            "event": "validation",
            "step": state["step"],
            "val_ppl": round(math.exp(nll), 3),
            "exported": improved,
        }
    )


def _maybe_start_decay(state: dict, cfg: TrainConfig, elapsed: float, steps_per_s: float) -> None:
    """Fix the decay's start and end: at the planned step, or when the clock says it is time."""
    step = state["step"]
    if step < cfg.warmup_steps:
        return
    if step >= cfg.planned_decay_start:
        state["decay_start"], state["end_step"] = step, cfg.total_steps
        _log({"event": "decay", "start": step, "end": state["end_step"], "reason": "token budget"})
    elif cfg.minutes is not None and elapsed >= (1 - cfg.decay_frac) * cfg.minutes * 60:
        remaining = cfg.minutes * 60 - elapsed
        end = step + max(1, int(0.9 * remaining * steps_per_s))
        state["decay_start"], state["end_step"] = step, min(end, cfg.total_steps)
        _log({"event": "decay", "start": step, "end": state["end_step"], "reason": "clock"})


def _checkpoint(path: Path, model, opt, state, cfg: TrainConfig) -> None:
    payload = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "state": state,
        "config": asdict(cfg),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
