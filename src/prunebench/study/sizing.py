"""Cluster job sizes from the model: host memory and wall time of each rule, from the model's
parameter count P, the bytes per weight b of its dtype (float32: 4, bfloat16 / float16: 2) and, for
recovery, the training tokens T. The formulas (also in docs/slurm.md):

- memory (MB) = 3,000 + copies x P x b / 10^6, rounded up to 1,000 MB. ``copies`` counts the model's
  weights held in host memory at once: 2 to load a checkpoint (the file's tensors and the module),
  3 where a second model or a pruned copy is written (prune, apply_rule_plan, import_gguf,
  eval_latency). Recovery with a CPT phase holds float32 weights (b = 4) 3 times (the loaded file
  and module, and the trainable state copied for a checkpoint); LoRA loads the model in its dtype (2).
- run time (min) = 15 + minutes per 10^9 parameters x P / 10^9 (score 9, prune 5, eval_zeroshot 35,
  eval_latency 9, eval_ppl 3 per data set x window), the run times we sized for 7B models scaled by
  size. Recovery: 15 + 1.5 x k x P x T / (GPUs x 100 TFLOP/s) / 60 with k = 6 for CPT (forward,
  backward and weight gradients) and 4 for LoRA (no weight gradients of the frozen base), i.e. an
  A100's bf16 peak at about 30 % utilisation, plus half again as margin. A prune job of a method that
  trains per ratio (policy-gradient) adds 1.5 x 2 x P x T_f / 100 TFLOP/s / 60 for its T_f training
  forward tokens (``Method.ratio_step_tokens``).

P is counted on the model's modules built from its config alone (meta device, no weights): a local
directory, a GGUF header, or the Hub's config (cache or one quick request); pruned and recovered
models are sized by their base model (an upper bound). When the Hub cannot be reached P is taken as
``ASSUMED_PARAMETERS`` (the paper models' 7-8B), with a warning. A site's ``set-resources`` for a
rule in the Slurm profile replaces these values.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

from prunebench.errors import warn

BYTES_PER_WEIGHT = {"float32": 4, "bfloat16": 2, "float16": 2}
BASE_MB = 3000
MINIMUM_MINUTES = 15
ASSUMED_PARAMETERS = 8_000_000_000
GPU_FLOPS = 100e12  # sustained training FLOP/s per GPU (A100 bf16 at ~30 % of its 312 TFLOP/s peak)
MARGIN = 1.5
#: Weights held in host memory at once, per rule (default 2: load one checkpoint).
MODEL_COPIES = {"prune": 3, "apply_rule_plan": 3, "import_gguf": 3, "eval_latency": 3}
#: Minutes per 10^9 parameters, per rule (eval_ppl: per data set x window).
MINUTES_PER_BILLION = {"score": 9, "prune": 5, "apply_rule_plan": 2, "import_gguf": 2, "eval_zeroshot": 35}
MINUTES_PER_BILLION |= {"eval_latency": 9, "eval_ppl": 3, "calibration": 0}


@functools.cache
def _count(kind: str, source: str) -> int | None:
    """Parameters of the model a local directory / GGUF file / Hub id describes; None if unknown."""
    from prunebench.models.checkpoint import load_skeleton, skeleton_of
    from prunebench.models.hub import look_up, looks_like_hub_id

    if kind == "gguf":
        from prunebench.models.gguf_import import gguf_config

        skeleton = skeleton_of(gguf_config(source))
    elif Path(source).exists() or (looks_like_hub_id(source) and look_up(source).found):
        skeleton = load_skeleton(source)
    else:
        warn(
            f"cannot read the config of {source} here; its jobs are sized for {ASSUMED_PARAMETERS / 1e9:g}B "
            "parameters"
        )
        return None
    return sum(p.numel() for p in skeleton.parameters())


def parameter_count(spec: dict[str, Any]) -> int:
    """Parameters of a study model (``config.models.<name>``); ``ASSUMED_PARAMETERS`` when unknown."""
    count = _count("gguf", spec["gguf"]["source"]) if "gguf" in spec else _count("path", spec["path"])
    return ASSUMED_PARAMETERS if count is None else count


def _round_up(mb: float, step: int = 1000) -> int:
    return math.ceil(mb / step) * step


def memory_mb(rule: str, parameters: int, dtype: str, full_training: bool = False) -> int:
    """Host memory of a job of ``rule`` on a model of ``parameters`` weights in ``dtype`` (MB)."""
    if rule == "recover" and full_training:
        return _round_up(BASE_MB + 3 * parameters * BYTES_PER_WEIGHT["float32"] / 1e6)
    copies = MODEL_COPIES.get(rule, 2)
    return _round_up(BASE_MB + copies * parameters * BYTES_PER_WEIGHT[dtype] / 1e6)


def runtime_min(rule: str, parameters: int, units: int = 1) -> int:
    """Wall time of a job of ``rule`` (minutes); ``units``: eval_ppl's data set x window pairs."""
    per_billion = MINUTES_PER_BILLION.get(rule, 0)
    return math.ceil(MINIMUM_MINUTES + per_billion * units * parameters / 1e9)


def prune_runtime_min(parameters: int, ratio_step_tokens: int) -> int:
    """Wall time of a prune job: the rule's time plus, for a method that trains per ratio
    (``Method.ratio_step_tokens``), its forward FLOPs (2 x P x tokens) at ``GPU_FLOPS`` with ``MARGIN``."""
    training = MARGIN * 2 * parameters * ratio_step_tokens / GPU_FLOPS / 60
    return math.ceil(runtime_min("prune", parameters) + training)


def recovery_runtime_min(parameters: int, tokens: int, full_training: bool, gpus: int = 1) -> int:
    """Wall time of a recover job: training FLOPs (6 or 4 x P x T) over ``gpus`` x ``GPU_FLOPS``."""
    flops = (6 if full_training else 4) * parameters * tokens
    return math.ceil(MINIMUM_MINUTES + MARGIN * flops / (max(gpus, 1) * GPU_FLOPS) / 60)


def recovery_tokens(spec: dict[str, Any]) -> int:
    """Training tokens of a recovery variant: its token budget, or steps x batch_size x seqlen."""
    if "tokens" in spec:
        return int(spec["tokens"])
    return int(spec["steps"]) * int(spec["batch_size"]) * int(spec["seqlen"])
