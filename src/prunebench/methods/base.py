"""The method contract: typed configs with official defaults, ratio-independent scores, cheap selection."""

from __future__ import annotations

import abc
import dataclasses
import difflib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.io import OutputKind, atomic_write_json
from prunebench.models.adapter import ModelAdapter, get_adapter
from prunebench.models.counting import decoder_params, kv_group_params, mlp_channel_params
from prunebench.models.streaming import Runner
from prunebench.options import parse_option
from prunebench.plan import PruningPlan

SCORES_TENSORS = "scores.safetensors"
SCORES_META = "scores.json"
#: What `prunebench score` writes (with the calibration samples when the method used any).
SCORES_DIRECTORY = OutputKind("scores directory", (SCORES_META,))


@dataclass(frozen=True)
class MethodConfig:
    """Options of a method. Subclasses add fields whose defaults are the official ones.

    The common fields say how the method calibrates in the paper's setting (``calibration: paper``).
    """

    calib_dataset: str = "wikitext2"
    nsamples: int = 128
    seqlen: int = 128
    seed: int = 0

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> MethodConfig:
        """Build the config from user parameters; an unknown key is an error with close matches."""
        params = dict(params or {})
        names = [f.name for f in dataclasses.fields(cls)]
        for key in params:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise PrunebenchError(
                    f"unknown option {key!r} for {cls.__name__}{hint} (options: {', '.join(names)})"
                )
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        coerced = {k: _coerce(k, v, types[k]) for k, v in params.items()}
        config = cls(**coerced)
        config.check()
        return config

    def check(self) -> None:
        """Validate option values; subclasses extend it."""
        if self.nsamples <= 0 or self.seqlen <= 1:
            raise PrunebenchError(
                f"nsamples must be > 0 and seqlen > 1, got {self.nsamples} and {self.seqlen}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(key: str, value: Any, declared: Any) -> Any:
    """A user value as the field's declared type; a string that is not of it is a clear error."""
    try:
        return parse_option(value, declared)
    except ValueError:
        raise PrunebenchError(f"option {key}={value!r} is not a valid {declared}") from None


@dataclass
class Scores:
    """What a method measured on the dense model: tensors plus JSON metadata (ratio-independent)."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    def check_finite(self, what: str) -> None:
        """Raise ``PrunebenchError`` naming the first floating-point tensor with a NaN or inf."""
        for key, tensor in self.tensors.items():
            if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
                raise PrunebenchError(
                    f"{what}: score tensor {key!r} holds non-finite values ({int(tensor.isnan().sum())} NaN, "
                    f"{int(tensor.isinf().sum())} inf); scores must be finite"
                )

    def save(self, directory: str | os.PathLike) -> None:
        """Write the tensors and the metadata into ``directory``; non-finite scores are refused first."""
        self.check_finite(f"scores of {self.meta.get('method', 'a method')}")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (SCORES_TENSORS + ".tmp")
        save_file({k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}, str(tmp))
        os.replace(tmp, directory / SCORES_TENSORS)
        atomic_write_json(directory / SCORES_META, self.meta)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Scores:
        directory = Path(directory)
        if not (directory / SCORES_META).is_file():
            raise PrunebenchError(f"no scores in {directory} (expected {SCORES_META})")
        tensors = load_file(str(directory / SCORES_TENSORS)) if (directory / SCORES_TENSORS).exists() else {}
        scores = cls(tensors=tensors, meta=json.loads((directory / SCORES_META).read_text()))
        scores.check_finite(f"scores in {directory}")
        return scores


class Method(abc.ABC):
    """A structured-pruning method. Subclasses set ``Config``, ``families`` and implement both steps.

    The first docstring line is the summary shown by ``prunebench methods``.
    """

    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    families: ClassVar[tuple[str, ...]] = ("llama", "mistral", "qwen2")
    #: False for a data-free method: ``score`` gets ``None`` and no calibration text is ever loaded.
    uses_calibration: ClassVar[bool] = True
    #: True when the expensive step needs the ratio (a sequential pass or a training run per ratio):
    #: ``score`` then computes and saves only what every ratio shares (calibration rows, statistics of the
    #: dense model), once per model, and ``select`` does the per-ratio work. The workflow is the same
    #: either way (``score`` once, ``prune`` per ratio); the flag tells users and the cost tables where
    #: the time goes (``prunebench methods`` marks these methods).
    ratio_dependent: ClassVar[bool] = False

    def ratio_step_tokens(self, config: MethodConfig) -> int:
        """Tokens the per-ratio step (``select``) runs forward through the model: 0 unless the method
        trains per ratio. Cluster jobs are sized by it (``prunebench.study.sizing.prune_runtime_min``)."""
        return 0

    #: Why the method cannot score one decoder layer at a time; ``None`` when it can
    #: (:meth:`score_layers`, used by ``prunebench score --stream``).
    no_streaming: ClassVar[str | None] = "its scores need the whole model resident"
    #: How a method that streams does it, when more than one pass over the layers (``methods --streaming``).
    streaming_note: ClassVar[str | None] = None
    #: Why :meth:`select` cannot run with the model in CPU memory (``prunebench prune --stream``);
    #: ``None`` when it can: it reads only the scores, or its per-ratio pass takes one layer at a time
    #: to the device (:meth:`select_streamed`).
    no_streamed_selection: ClassVar[str | None] = None

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or cls.name).strip().splitlines()[0]

    def config(self, params: dict[str, Any] | None = None) -> MethodConfig:
        return self.Config.from_params(params)

    def check_model(self, model: nn.Module, config: MethodConfig | None = None) -> None:
        """Refuse a model family the method does not handle, before any work (works on a skeleton).

        Methods whose options depend on the model's shape (a layer range, say) extend it to check
        ``config`` against ``model`` as well.
        """
        family = get_adapter(model).family
        if family not in self.families:
            raise PrunebenchError(
                f"method {self.name} does not support {family} models (supports: {', '.join(self.families)})"
            )

    def calibration(
        self, tokenizer: Any, source: str, config: MethodConfig, encoding: str = "utf-8"
    ) -> torch.Tensor:
        """Calibration rows in the method's official recipe (``calibration: paper``). Default: random
        windows of ``source``'s train split (GPTQ style; a local text read as ``encoding``); methods
        with another recipe override it."""
        from prunebench.data import calibration_samples, load_text

        return calibration_samples(
            tokenizer, load_text(source, "train", encoding), config.nsamples, config.seqlen, config.seed
        )

    def check_ratio(self, model: nn.Module, target_ratio: float, config: MethodConfig) -> None:
        """Refuse a ratio that cannot be realised, before scoring. Subclasses add their own limits.

        Works on a skeleton (shapes only). Common to every method: the ratio lies in [0, 1) and leaves
        at least one decoder sublayer (:func:`max_ratio_keeping_a_sublayer`).
        """
        if not 0 <= target_ratio < 1:
            raise PrunebenchError(f"ratio must be in [0, 1), got {target_ratio}")
        most = max_ratio_keeping_a_sublayer(get_adapter(model))
        if target_ratio > most:
            raise PrunebenchError(
                f"ratio {target_ratio} would leave no decoder sublayer: keeping even one MLP channel or one "
                f"KV group with its norm removes at most {most:.4f} of the decoder parameters"
            )

    @abc.abstractmethod
    def score(self, model: nn.Module, calibration: torch.Tensor, config: MethodConfig) -> Scores:
        """The ratio-independent measurement on the dense model (the expensive step unless ``ratio_dependent``)."""

    def score_layers(self, runner: Runner, calibration: torch.Tensor | None, config: MethodConfig) -> Scores:
        """:meth:`score` through a calibration ``runner`` (:mod:`prunebench.models.streaming`): the same
        scores whether the model is resident or streamed one layer at a time. Methods that stream
        (``no_streaming is None``) override it; the others raise ``PrunebenchError`` saying why not."""
        raise PrunebenchError(f"method {self.name} cannot stream layers: {self.no_streaming}")

    @abc.abstractmethod
    def select(
        self, scores: Scores, model: nn.Module, target_ratio: float, config: MethodConfig
    ) -> PruningPlan:
        """The plan that reaches ``target_ratio`` of decoder parameters: cheap, or the expensive per-ratio
        step when ``ratio_dependent``."""

    def select_streamed(
        self,
        scores: Scores,
        model: nn.Module,
        target_ratio: float,
        config: MethodConfig,
        device: torch.device,
        device_budget: int | None = None,
    ) -> PruningPlan:
        """:meth:`select` on a ``model`` kept in CPU memory: a per-ratio pass over the model moves one decoder
        layer at a time to ``device``, within ``device_budget`` bytes (:mod:`prunebench.models.streaming`).
        The same plan as :meth:`select`. Default: the selection reads only the scores and runs no pass;
        a method with ``no_streamed_selection`` set raises ``PrunebenchError`` saying why it cannot."""
        if self.no_streamed_selection is not None:
            raise PrunebenchError(f"method {self.name} cannot prune streamed: {self.no_streamed_selection}")
        return self.select(scores, model, target_ratio, config)


def calibration_rows_scores(method: str, model: nn.Module, calibration: torch.Tensor) -> Scores:
    """The scores of a method whose expensive step runs per ratio: the calibration rows themselves
    (``input_ids``, ``[nsamples, seqlen]`` on the CPU) with their count and length. Raises
    ``PrunebenchError`` for an already pruned model or rows that are not a non-empty 2-D LongTensor."""
    if not get_adapter(model).is_dense():
        raise PrunebenchError(f"{method} scores a dense model, but this model is already pruned")
    if calibration.dim() != 2 or calibration.dtype != torch.long or calibration.shape[0] < 1:
        raise PrunebenchError(
            f"{method}: calibration must be a non-empty [nsamples, seqlen] LongTensor, got {tuple(calibration.shape)}"
        )
    rows = calibration.detach().cpu().contiguous()
    meta = {"method": method, "nsamples": int(rows.shape[0]), "seqlen": int(rows.shape[1])}
    return Scores(tensors={"input_ids": rows}, meta=meta)


def max_ratio_keeping_a_sublayer(adapter: ModelAdapter) -> float:
    """The largest decoder ratio any plan can reach while one sublayer remains: all but the smallest
    remainder, one MLP channel or one KV group of some layer together with that sublayer's norm."""

    def norm(module: nn.Module | None) -> int:
        return 0 if module is None else sum(p.numel() for p in module.parameters())

    smallest = min(
        min(
            kv_group_params(adapter, i) + norm(adapter.input_norm(i)),
            mlp_channel_params(adapter, i) + norm(adapter.post_attention_norm(i)),
        )
        for i in range(adapter.num_layers)
    )
    return 1 - smallest / decoder_params(adapter.model)
