"""The study's pruning steps as library calls, shared by the CLI and the Snakemake scripts.

Every step checks its inputs before any expensive work, writes its outputs atomically and records
its wall time and peak memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from prunebench.data import calibration_samples, load_samples, load_text, save_samples
from prunebench.data.calibration import check_token_ids
from prunebench.data.text import check_text_source
from prunebench.errors import PrunebenchError, warn
from prunebench.evaluation.cost import measure_cost
from prunebench.files import DEFAULT_ENCODING
from prunebench.io import atomic_directory, check_output
from prunebench.methods import Method, MethodConfig, Scores, get_method
from prunebench.methods.base import SCORES_DIRECTORY
from prunebench.models import apply_plan, get_adapter, load_pretrained, save_pretrained
from prunebench.models.checkpoint import PRUNED_CHECKPOINT, load_skeleton, load_tokenizer
from prunebench.models.context import check_context
from prunebench.models.counting import decoder_params, part_params, total_params
from prunebench.models.device import check_device, check_gpus
from prunebench.models.integrity import check_fingerprint, check_shapes, dense_shapes, fingerprint
from prunebench.models.streaming import SafetensorsLayers, StreamingRunner
from prunebench.plan import PruningPlan

SAMPLES_FILE = "calibration.safetensors"
#: An achieved decoder ratio further than this from the target is a warning (log and plan notes).
RATIO_WARNING = 0.05


def make_calibration(
    model_path: str,
    source: str,
    nsamples: int,
    seqlen: int,
    seed: int,
    out: str | os.PathLike | None = None,
    encoding: str = DEFAULT_ENCODING,
) -> torch.Tensor:
    """Calibration samples for ``model_path`` (with its tokenizer) from the train split of ``source``,
    saved to ``out`` when given. A ``seqlen`` beyond the model's context and a local text that is
    missing or not ``encoding`` are refused first."""
    check_context(model_path, seqlen, "calibration seqlen")
    text = load_text(source, "train", encoding)
    _, tokenizer = load_pretrained(model_path)
    if tokenizer is None:
        raise PrunebenchError(f"{model_path} has no tokenizer to tokenize calibration text with")
    samples = calibration_samples(tokenizer, text, nsamples, seqlen, seed)
    if out is not None:
        save_samples(samples, out)
    return samples


def _check_streaming(stream: bool, device_budget: int | None, gpus: int) -> None:
    """A device budget only with ``stream``; a streamed pass runs on one device (``PrunebenchError``)."""
    if device_budget is not None and not stream:
        raise PrunebenchError("a device budget applies to a streamed pass: give --stream with it")
    if stream and gpus > 1:
        raise PrunebenchError("a streamed pass runs on one device: give --stream or --gpus N, not both")


def score_model(
    model_path: str,
    method_name: str,
    out_dir: str | os.PathLike,
    calib: str | None = None,
    samples_path: str | os.PathLike | None = None,
    params: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    encoding: str = DEFAULT_ENCODING,
    stream: bool = False,
    device_budget: int | None = None,
    gpus: int = 1,
    gpu_memory: int | None = None,
) -> Scores:
    """Score ``model_path`` with a method and save the scores with the calibration samples they used.

    ``stream``: the weights are read from the local model directory one decoder layer at a time
    (:class:`~prunebench.models.streaming.SafetensorsLayers`) and each layer runs on ``device`` over
    the whole calibration set (:class:`~prunebench.models.streaming.StreamingRunner`); the scores are
    the same as in memory. ``device_budget`` (bytes) bounds the device memory of that pass (one layer
    plus the calibration states kept there; the rest wait in CPU memory). The scores' metadata records
    both and the device's peak (``streaming``). A method that cannot stream, a model that is no local
    directory, or a budget below one layer is a ``PrunebenchError`` before the weights are read.
    ``gpus > 1`` (with ``gpu_memory`` bytes at most on each) splits a resident model over CUDA devices.

    ``out_dir`` must be absent, empty or an earlier scores directory (checked before the model is
    loaded; ``PrunebenchError`` otherwise).

    Samples come from ``samples_path`` (shared calibration) or are drawn from ``calib`` (default:
    the method's official data set; a local text read as ``encoding``) with the method's sample
    count, length and seed. A data-free method (``uses_calibration = False``) gets none, and no text
    is loaded. The scores' metadata records the dense model's shapes and weight fingerprint
    (``base_shapes``, ``base_fingerprint``), which :func:`prune_model` checks. Raises
    ``PrunebenchError`` before loading the weights for an unavailable device, an unsupported family,
    unreadable samples or ids outside the vocabulary, a missing or undecodable local text, or a
    calibration length beyond the model's context; and before saving for non-finite scores.
    """
    method = get_method(method_name)
    config = method.config(params)
    check_device(device)
    check_output(out_dir, SCORES_DIRECTORY)
    _check_streaming(stream, device_budget, gpus)
    if stream and method.no_streaming is not None:
        raise PrunebenchError(f"method {method_name} cannot stream layers: {method.no_streaming}")
    if stream and not Path(model_path).is_dir():
        raise PrunebenchError(f"streaming reads a local model directory; {model_path} is none")
    check_gpus(device, gpus)
    skeleton = load_skeleton(model_path)
    method.check_model(skeleton, config)
    samples = source = None
    if method.uses_calibration and samples_path is not None:
        samples, source = load_samples(samples_path), str(samples_path)
        check_token_ids(samples, skeleton.config.vocab_size, source)
    if method.uses_calibration:
        seqlen = config.seqlen if samples is None else samples.shape[1]
        check_context(skeleton, seqlen, "calibration seqlen")
    if method.uses_calibration and samples is None:
        source = calib or config.calib_dataset
        check_text_source(source, "train", encoding)
    if stream:
        layers = SafetensorsLayers(model_path, dtype)
        runner = StreamingRunner(layers, device, device_budget)
        model, tokenizer = layers.model, load_tokenizer(model_path)
    else:
        model, tokenizer = load_pretrained(
            model_path, dtype=dtype, device=device, gpus=gpus, gpu_memory=gpu_memory
        )
    if method.uses_calibration and samples is None:
        samples = _method_calibration(method, tokenizer, source, config, model_path, encoding)
    with measure_cost("score", device=device) as cost:
        calibration_rows = None if samples is None else samples.to(device)
        if stream:
            scores = method.score_layers(runner, calibration_rows, config)
        else:
            scores = method.score(model, calibration_rows, config)
    calibration = None if samples is None else {"source": source, "shape": list(samples.shape)}
    scores.meta.update(
        {
            "method": method_name,
            "params": config.to_dict(),
            "model": model_path,
            "base_shapes": dense_shapes(model),
            "base_fingerprint": layers.fingerprint() if stream else fingerprint(model),
            "calibration": calibration,
            "cost": cost,
        }
    )
    if stream:
        scores.meta["streaming"] = runner.record.to_dict()
    with atomic_directory(out_dir, SCORES_DIRECTORY) as tmp:
        scores.save(tmp)
        if samples is not None:
            save_samples(samples, Path(tmp) / SAMPLES_FILE)
    return scores


def _method_calibration(
    method: Method, tokenizer: Any, source: str, config: MethodConfig, model_path: str, encoding: str
) -> torch.Tensor:
    """The method's own calibration rows from ``source`` (its official recipe)."""
    if tokenizer is None:
        raise PrunebenchError(f"{model_path} has no tokenizer to tokenize calibration text with")
    return method.calibration(tokenizer, source, config, encoding)


def _param_counts(model: torch.nn.Module) -> dict[str, int]:
    return {
        "decoder": decoder_params(model),
        "total": total_params(model),
        "attn": part_params(model, "attn"),
        "mlp": part_params(model, "mlp"),
    }


def _achieved(after: dict[str, int], before: dict[str, int]) -> dict[str, float]:
    """Fractions removed (decoder, total, attention and MLP parameters) and the counts after pruning."""
    return {
        "decoder_ratio": 1 - after["decoder"] / before["decoder"],
        "total_ratio": 1 - after["total"] / before["total"],
        "attention_removed": 1 - after["attn"] / before["attn"],
        "mlp_removed": 1 - after["mlp"] / before["mlp"],
        "decoder_params": after["decoder"],
        "total_params": after["total"],
    }


def prune_model(
    model_path: str,
    method_name: str,
    ratio: float,
    out_dir: str | os.PathLike,
    scores_dir: str | os.PathLike | None = None,
    calib: str | None = None,
    params: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    encoding: str = DEFAULT_ENCODING,
    gpus: int = 1,
    gpu_memory: int | None = None,
    stream: bool = False,
    device_budget: int | None = None,
) -> PruningPlan:
    """Select a plan for ``ratio`` from saved scores (or score first) and write the pruned checkpoint.

    ``gpus > 1`` (with ``gpu_memory`` bytes at most on each) splits the model over CUDA devices.
    ``stream``: the model stays in CPU memory; a per-ratio pass (Wanda-sp's) moves one decoder layer at a
    time to ``device`` within ``device_budget`` bytes (:meth:`Method.select_streamed`), the same plan.
    It needs saved scores; a method whose selection cannot stream (``no_streamed_selection``) is refused.

    ``out_dir`` must be absent, empty or an earlier pruned checkpoint. Before the weights are loaded:
    the device, the output, the family, the ratio (in range, reachable, leaving a decoder sublayer),
    the scores' method and recorded dense shapes, or the calibration length and text. After: the
    scores' weight fingerprint. Each mismatch is a ``PrunebenchError``. Ratio 0 removes nothing and
    needs no scores: no search or scoring runs, and any saved scores are not read.
    """
    method = get_method(method_name)
    config = method.config(params)
    check_device(device)
    check_output(out_dir, PRUNED_CHECKPOINT)
    _check_streaming(stream, device_budget, gpus)
    if stream and method.no_streamed_selection is not None:
        raise PrunebenchError(f"method {method_name} cannot prune streamed: {method.no_streamed_selection}")
    if stream and ratio > 0 and scores_dir is None and method.uses_calibration:
        raise PrunebenchError("a streamed prune selects from saved scores: give --scores")
    skeleton = load_skeleton(model_path)
    method.check_model(skeleton, config)
    method.check_ratio(skeleton, ratio, config)
    check_gpus(device, gpus)
    split = {"gpus": gpus, "gpu_memory": gpu_memory}
    home = "cpu" if stream else device  # where the dense model is loaded; a streamed pass runs on device
    if ratio == 0:
        model, tokenizer = load_pretrained(model_path, dtype=dtype, device=home, **split)
        plan = PruningPlan(model_path, method_name, config.to_dict(), 0.0, layers={})
        plan.notes["ratio 0"] = "nothing removed: no scores were computed or read"
        return write_pruned(model, tokenizer, plan, out_dir)
    scores = None
    if scores_dir is not None:
        scores = Scores.load(scores_dir)
        if scores.meta.get("method") != method_name:
            raise PrunebenchError(
                f"{scores_dir} holds scores of {scores.meta.get('method')!r}, not {method_name!r}"
            )
        what = f"scores in {scores_dir} (of {scores.meta.get('model')})"
        check_shapes(scores.meta.get("base_shapes"), skeleton, what)
    elif method.uses_calibration:
        check_context(skeleton, config.seqlen, "calibration seqlen")
        check_text_source(calib or config.calib_dataset, "train", encoding)
    model, tokenizer = load_pretrained(model_path, dtype=dtype, device=home, **split)
    if scores is not None:
        check_fingerprint(scores.meta.get("base_fingerprint"), model, what)
    elif not method.uses_calibration:
        scores = method.score(model, None, config)
    else:
        source = calib or config.calib_dataset
        samples = _method_calibration(method, tokenizer, source, config, model_path, encoding)
        scores = method.score(model, samples.to(home), config)
        scores.check_finite(f"scores of {method_name}")
    with measure_cost("select", device=device) as cost:
        if stream:
            plan = method.select_streamed(scores, model, ratio, config, torch.device(device), device_budget)
        else:
            plan = method.select(scores, model, ratio, config)
    plan.base_model = model_path
    return write_pruned(model, tokenizer, plan, out_dir, extra_notes={"cost": {"select": cost}})


def ratio_warning(plan: PruningPlan) -> str | None:
    """A warning when the achieved decoder ratio is more than ``RATIO_WARNING`` away from the target."""
    gap = plan.achieved["decoder_ratio"] - plan.target_ratio
    if abs(gap) <= RATIO_WARNING:
        return None
    return (
        f"achieved decoder ratio {plan.achieved['decoder_ratio']:.4f} is {abs(gap):.4f} "
        f"{'above' if gap > 0 else 'below'} the target {plan.target_ratio} ({plan.method})"
    )


def write_pruned(
    model: torch.nn.Module,
    tokenizer: Any,
    plan: PruningPlan,
    out_dir: str | os.PathLike,
    extra_notes: dict[str, Any] | None = None,
) -> PruningPlan:
    """Apply ``plan`` to the dense ``model``, fill in the achieved ratios and save the checkpoint.

    The plan records the model's shapes and fingerprint; surgery validates it (indices, a sublayer
    remains) before changing anything. An achieved ratio far from the target (``ratio_warning``) is
    printed to stderr (the job's log) and kept in ``notes["warnings"]``.
    """
    plan.base_shapes, plan.base_fingerprint = dense_shapes(model), fingerprint(model)
    before = _param_counts(model)
    with measure_cost("apply") as cost:
        apply_plan(model, plan)
    plan.achieved = _achieved(_param_counts(model), before)
    plan.notes.update(extra_notes or {})
    plan.notes.setdefault("cost", {})["apply"] = cost
    warning = ratio_warning(plan)
    if warning is not None:
        warn(warning)
        if warning not in plan.notes.setdefault("warnings", []):  # a plan applied again keeps one copy
            plan.notes["warnings"].append(warning)
    save_pretrained(model, out_dir, tokenizer=tokenizer, plan=plan)
    return plan


def apply_plan_file(
    model_path: str,
    plan_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
) -> PruningPlan:
    """Apply a plan file (from any source, e.g. a method run as a Snakemake rule) to its base model.

    ``out_dir`` must be absent, empty or an earlier pruned checkpoint. The plan is validated against
    the model's shapes before the weights are loaded, and its recorded fingerprint (when it has one)
    against the weights after.
    """
    plan = PruningPlan.load(plan_path)
    check_output(out_dir, PRUNED_CHECKPOINT)
    plan.validate(get_adapter(load_skeleton(model_path)), f"plan {plan_path}")
    model, tokenizer = load_pretrained(model_path, dtype=dtype)
    check_fingerprint(plan.base_fingerprint, model, f"plan {plan_path}")
    return write_pruned(model, tokenizer, plan, out_dir)
