"""Zero-shot accuracy through lm-evaluation-harness, on a model already in memory.

The loaded model (dense or pruned, irregular shapes included) is wrapped in lm-eval's ``HFLM`` and handed
to ``lm_eval.simple_evaluate``; nothing about the tasks or the scoring is re-implemented here. The result
keeps lm-eval's full results JSON, tidy rows (task, metric, value, stderr, n) and the provenance that
decides the numbers: lm-eval version, task versions, batch size (fixed by default: padding in a batch
shifts log-likelihoods slightly), seed, limit and number of few-shot examples.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from prunebench.errors import PrunebenchError

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
STANDARD_TASKS = ("boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")


@dataclass(frozen=True)
class ZeroShotConfig:
    """One lm-eval run. ``seed`` feeds all four of lm-eval's seeds (python, numpy, torch, few-shot)."""

    tasks: tuple[str, ...] = STANDARD_TASKS
    include_path: str | None = None
    batch_size: int = 8
    limit: int | float | None = None
    seed: int = 1234
    num_fewshot: int = 0
    bootstrap_iters: int = 100000
    offline: bool = False
    log_samples: bool = False


def go_offline() -> None:
    """Keep the Hugging Face libraries off the network.

    Sets the three environment variables; ``huggingface_hub`` and ``datasets`` read them once at import,
    so where they are already imported their module-level flags are set as well.
    """
    for name in OFFLINE_VARIABLES:
        os.environ[name] = "1"
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].constants.HF_HUB_OFFLINE = True
    if "datasets" in sys.modules:
        config = sys.modules["datasets"].config
        config.HF_HUB_OFFLINE = config.HF_DATASETS_OFFLINE = True


def validate_config(config: ZeroShotConfig) -> None:
    """Checks that need no task index: sizes, limit, the include folder."""
    if not config.tasks:
        raise PrunebenchError("no zero-shot task given")
    if not isinstance(config.batch_size, int) or config.batch_size <= 0:
        raise PrunebenchError(f"batch size must be a positive integer, got {config.batch_size!r}")
    if config.limit is not None and config.limit <= 0:
        raise PrunebenchError(f"limit must be positive (a count, or a fraction below 1), got {config.limit}")
    if config.num_fewshot < 0:
        raise PrunebenchError(f"number of few-shot examples must be >= 0, got {config.num_fewshot}")
    if config.include_path is not None and not Path(config.include_path).is_dir():
        raise PrunebenchError(f"local task folder {config.include_path} does not exist (or is not a folder)")


def task_manager(config: ZeroShotConfig):
    """An lm-eval ``TaskManager`` that knows every requested task; unknown names -> PrunebenchError.

    When every requested name is found in the local folder alone, lm-eval's built-in index (thousands of
    YAML files, ~10 s to scan) is not built: local tasks take precedence over built-ins anyway, so the
    resolution is the same.
    """
    from lm_eval.tasks import TaskManager

    if config.include_path is not None:
        local = TaskManager(include_path=config.include_path, include_defaults=False)
        if all(name in local.all_tasks for name in config.tasks):
            return local
    manager = TaskManager(include_path=config.include_path)
    unknown = [name for name in config.tasks if name not in manager.all_tasks]
    if unknown:
        described = []
        for name in unknown:
            close = difflib.get_close_matches(name, manager.all_tasks, n=5, cutoff=0.6)
            described.append(f"{name!r}" + (f" (close matches: {', '.join(close)})" if close else ""))
        where = f" (built-in tasks and {config.include_path})" if config.include_path else ""
        tasks = "the task" if len(unknown) == 1 else "the tasks"
        raise PrunebenchError(f"lm-eval does not know {tasks} {', '.join(described)}{where}")
    return manager


def tidy_rows(results: dict) -> list[dict]:
    """One row per (task, metric, filter): value, stderr (None when lm-eval gives none or a non-finite
    one), n, version. A non-finite value is a ``PrunebenchError``."""
    rows = []
    for task, metrics in results["results"].items():
        n = results.get("n-samples", {}).get(task, {}).get("effective")
        version = results.get("versions", {}).get(task)
        for key, value in metrics.items():
            metric, _, filter_name = key.partition(",")
            if not filter_name or metric.endswith("_stderr") or not isinstance(value, int | float):
                continue
            if not math.isfinite(value):
                raise PrunebenchError(f"lm-eval gives {task} {metric} = {value}: a metric must be finite")
            stderr = metrics.get(f"{metric}_stderr,{filter_name}")
            defined = isinstance(stderr, int | float) and math.isfinite(stderr)
            rows.append(
                {
                    "task": task,
                    "metric": metric,
                    "filter": filter_name,
                    "value": float(value),
                    "stderr": float(stderr) if defined else None,
                    "n": n,
                    "version": version,
                }
            )
    return rows


def to_json(value) -> dict:
    """lm-eval's results made JSON-serialisable the way lm-eval's own writer does it."""
    from lm_eval.utils import handle_non_serializable

    return json.loads(json.dumps(value, default=handle_non_serializable))


@contextmanager
def finite_logits(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, every forward of ``model`` whose logits hold a NaN or inf raises ``PrunebenchError``
    (lm-eval would otherwise turn them into an accuracy)."""

    def check(module: torch.nn.Module, args: tuple, output: Any) -> None:
        logits = getattr(output, "logits", output)
        if isinstance(logits, torch.Tensor) and not bool(logits.isfinite().all()):
            raise PrunebenchError(
                "the model's logits hold NaN or inf: its outputs are not finite (no accuracy)"
            )

    handle = model.register_forward_hook(check)
    try:
        yield
    finally:
        handle.remove()


def evaluate_zeroshot(model: torch.nn.Module, tokenizer, config: ZeroShotConfig, manager=None) -> dict:
    """Run lm-eval on ``model`` in memory; returns a JSON-able dict.

    ``manager`` is a ``TaskManager`` from :func:`task_manager` when the caller checked the task names
    already (before loading the model); otherwise one is built here.

    Keys: ``rows`` (tidy metrics, ``acc`` and ``acc_norm`` where a task has them), ``protocol`` (this
    config, lm-eval version, task versions, batch size, seed, limit), ``results`` (lm-eval's full results
    JSON, per-sample records under ``samples`` only with ``log_samples``).
    """
    validate_config(config)
    if tokenizer is None:
        raise PrunebenchError("zero-shot evaluation needs the model's tokenizer, and none was found")
    if config.offline:
        go_offline()
    if manager is None:
        manager = task_manager(config)

    import lm_eval
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=config.batch_size)
    with finite_logits(model):
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(config.tasks),
            num_fewshot=config.num_fewshot,
            batch_size=config.batch_size,
            limit=config.limit,
            bootstrap_iters=config.bootstrap_iters,
            log_samples=config.log_samples,
            task_manager=manager,
            random_seed=config.seed,
            numpy_random_seed=config.seed,
            torch_random_seed=config.seed,
            fewshot_random_seed=config.seed,
        )
    results = to_json(results)
    return {
        "rows": tidy_rows(results),
        "protocol": asdict(config)
        | {
            "tasks": list(config.tasks),
            "lm_eval_version": lm_eval.__version__,
            "task_versions": results.get("versions", {}),
        },
        "results": results,
    }


def parse_tasks(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"boolq, piqa"`` or a list -> a tuple of non-empty names."""
    names = text.split(",") if isinstance(text, str) else list(text)
    return tuple(name.strip() for name in names if name.strip())
