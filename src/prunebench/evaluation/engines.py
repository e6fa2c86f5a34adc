"""How a model runs one greedy generation: the ``eager`` and ``compiled`` latency engines.

- ``eager``: Hugging Face eager forward passes with a ``DynamicCache`` (what ``model(...)`` does by
  default); a prefill pass, then one pass per new token.
- ``compiled``: a ``StaticCache`` (keys and values preallocated for ``cache_len`` tokens, allocated per
  layer on first use, so per-layer KV-head counts of pruned models and layers without attention work) and
  the decode step compiled with ``torch.compile(model.__call__, **CompileConfig(...).to_dict())``, as
  transformers' ``PreTrainedModel.get_compiled_call`` does -- what ``generate`` does for a static cache:
  prefill runs uncompiled into the static cache, every decode step runs the compiled call. The mode is
  transformers' default, ``"reduce-overhead"`` (CUDA graphs), on GPU and inductor's ``"default"`` on CPU,
  where there are no CUDA graphs. ``fullgraph=True``, so a graph break is an error, not a silently
  partly-eager step; ``dynamic=False``, one graph per batch size (the cache length is the same for every
  cell of a sweep).

Compilation happens in the first run of a cell (:meth:`CompiledRunner.prepare`), which is timed
separately and never counted as a measurement. Dynamo's recompile limit is raised to
:data:`RECOMPILE_LIMIT` and hitting it is an error, so a run can never fall back to eager unnoticed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import StaticCache
from transformers.generation.configuration_utils import CompileConfig

from prunebench.errors import PrunebenchError
from prunebench.evaluation.cost import cuda_in_use

ENGINES = ("eager", "compiled")
RECOMPILE_LIMIT = 64
COMPILE_FAILED = "compile failed"


def check_engines(engines: tuple[str, ...]) -> None:
    """Engines must be known and listed once."""
    if not engines:
        raise PrunebenchError("no latency engine given; choose from " + ", ".join(ENGINES))
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        raise PrunebenchError(f"unknown latency engine {unknown[0]!r}; choose from {', '.join(ENGINES)}")
    if len(set(engines)) != len(engines):
        raise PrunebenchError(f"each latency engine may be given once, got {list(engines)}")


def compile_mode(device: torch.device) -> str:
    """``"reduce-overhead"`` (CUDA graphs, transformers' default) on GPU, ``"default"`` elsewhere."""
    return "reduce-overhead" if cuda_in_use(device) else "default"


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process so far (``torch._dynamo.utils.counters``)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _greedy(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, -1:].argmax(dim=-1)


class EagerRunner:
    """Eager forward passes through a ``DynamicCache``."""

    engine = "eager"

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def settings(self) -> dict[str, Any]:
        return {"engine": self.engine, "cache": "dynamic"}

    def prepare(self, cache_len: int, input_ids: torch.Tensor, new_tokens: int) -> float | None:
        """Nothing to build or compile; returns no compile time."""
        return None

    @torch.inference_mode()
    def generate(
        self, input_ids: torch.Tensor, new_tokens: int, mark: Callable, keep: list | None = None
    ) -> tuple:
        """Prefill, then ``new_tokens`` greedy steps; returns the three time marks.

        ``keep`` (tests): a list that receives each step's last-position logits.
        """
        t0 = mark()
        out = self.model(input_ids=input_ids, use_cache=True, logits_to_keep=1)
        token = _greedy(out.logits)
        t1 = mark()
        cache = out.cache
        for _ in range(new_tokens):
            if keep is not None:
                keep.append(out.logits[:, -1].float().clone())
            out = self.model(input_ids=token, cache=cache, use_cache=True)
            token = _greedy(out.logits)
            cache = out.cache
        if keep is not None:
            keep.append(out.logits[:, -1].float().clone())
        return t0, t1, mark()


class CompiledRunner:
    """Static KV cache, uncompiled prefill, compiled decode step (see the module docstring)."""

    engine = "compiled"

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.mode = compile_mode(self.device)
        self.cache: StaticCache | None = None
        self.cache_len = 0
        self.step: Callable | None = None

    def settings(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "cache": "static",
            "compiled": "decode step (prefill uncompiled, as in transformers' generate)",
            "backend": "inductor",
            "mode": self.mode,
            "fullgraph": True,
            "dynamic": False,
        }

    def prepare(self, cache_len: int, input_ids: torch.Tensor, new_tokens: int) -> float:
        """Build the static cache and compile by running once; returns that run's wall seconds."""
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        torch._dynamo.config.accumulated_recompile_limit = max(
            torch._dynamo.config.accumulated_recompile_limit, 4 * RECOMPILE_LIMIT
        )
        torch._dynamo.config.fail_on_recompile_limit_hit = True
        self.cache = StaticCache(config=self.model.config, max_cache_len=cache_len)
        self.cache_len = cache_len
        if self.step is None:
            # transformers' get_compiled_call caches the wrapper on the model, where copy.deepcopy of the
            # model carries it over to the copy, still bound to the original: compile our own instead
            options = CompileConfig(fullgraph=True, dynamic=False, backend="inductor", mode=self.mode)
            self.step = torch.compile(self.model.__call__, **options.to_dict())
        start = time.perf_counter()
        self.generate(input_ids, new_tokens, time.perf_counter)
        if cuda_in_use(self.device):
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    @torch.inference_mode()
    def generate(
        self, input_ids: torch.Tensor, new_tokens: int, mark: Callable, keep: list | None = None
    ) -> tuple:
        """Prefill into the (reset) static cache, then ``new_tokens`` compiled greedy steps; three time marks."""
        if self.cache is None or self.step is None:
            raise RuntimeError("CompiledRunner.prepare must run before generate")
        cuda = cuda_in_use(self.device)
        prompt = input_ids.shape[1]
        if prompt + new_tokens > self.cache_len:
            raise PrunebenchError(
                f"static cache holds {self.cache_len} tokens, the run needs {prompt + new_tokens}"
            )
        self.cache.reset()
        prefill_positions = torch.arange(prompt, device=self.device)
        # one tensor per step, all of the same size, stride and offset: no guard sees a new input
        steps = [torch.tensor([prompt + i], device=self.device) for i in range(new_tokens)]
        t0 = mark()
        out = self.model(
            input_ids=input_ids,
            cache=self.cache,
            cache_position=prefill_positions,
            use_cache=True,
            logits_to_keep=1,
        )
        token = _greedy(out.logits)
        t1 = mark()
        for i in range(new_tokens):
            if keep is not None:
                keep.append(out.logits[:, -1].float().clone())
            if cuda:
                torch.compiler.cudagraph_mark_step_begin()
            out = self.step(
                input_ids=token,
                cache=self.cache,
                cache_position=steps[i],
                use_cache=True,
            )
            token = _greedy(out.logits)
        if keep is not None:
            keep.append(out.logits[:, -1].float().clone())
        return t0, t1, mark()


def make_runner(engine: str, model: torch.nn.Module) -> EagerRunner | CompiledRunner:
    """The runner of ``engine`` for ``model``."""
    check_engines((engine,))
    return EagerRunner(model) if engine == "eager" else CompiledRunner(model)
