"""Check papers' qualitative claims against a study's results, with the results' uncertainty.

A claim is data (``resources/claims/*.yaml``): its text in our words, its source in the paper, and one
of the checks below with its arguments. Each check compares variants of one model and returns one
:class:`Comparison` per pair it looked at, each ``better`` (the claim's direction, beyond the
uncertainty), ``worse`` (the opposite direction, beyond the uncertainty) or ``tie``:

- ``lower_ppl``: ``method`` has a lower perplexity than each of ``than`` (recovery none, every ratio
  unless ``ratios`` is given, every data set and window). The difference is paired over the same
  evaluation windows: mean and standard error of the per-window mean-NLL difference; beyond
  ``Z`` = 1.96 standard errors it is ``better``/``worse``, else a tie.
- ``recovery_gain``: recovery ``better`` ends at a lower perplexity than recovery ``than`` for every
  method recovered both ways (paired as above), at ``ratios`` (default: the study's highest).
- ``removed_sublayers``: ``method``'s plans remove more attention than MLP sublayers, and most of them
  in the deeper half of the layers (a count, no uncertainty; equal counts are ties).
- ``decode_speedup``: every method of ``methods`` decodes faster than every method of ``than`` at the
  same ratio, batch size ``batch_size`` (default 1): each speed-up is the spread of the per-repeat
  ratios of dense to pruned time per token (measured interleaved in one job); ``better`` when the
  10th percentile of one exceeds the 90th percentile of the other.

The verdict of a claim: ``holds`` when every comparison is ``better``, ``does not hold`` when none is
and at least one is ``worse``, ``inconclusive`` when all are ties, ``partly`` otherwise; ``no data``
when the study has none of the variants it needs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from prunebench.errors import PrunebenchError
from prunebench.study.grid import ratio_tag, study_root

Z = 1.96


@dataclass(frozen=True)
class Comparison:
    """One compared pair: what it shows in words, and its outcome (better, worse or tie)."""

    text: str
    outcome: str


@dataclass(frozen=True)
class Verdict:
    """A claim, its source and what the study's results say about it."""

    id: str
    claim: str
    source: str
    verdict: str
    comparisons: list[Comparison]


@dataclass(frozen=True)
class StudyResults:
    """The result files of one model of a study (``results/<study>/<model>/...``) and the study's grid."""

    root: Path
    model: str
    ratios: list[float]
    ppl: list[tuple[str, int]]  # (data set, window length)
    num_layers: int

    def variant(self, method: str, ratio: float, recovery: str = "none") -> Path:
        return self.root / self.model / method / f"r{ratio_tag(ratio)}" / recovery

    def ppl_result(self, method: str, ratio: float, dataset: str, seqlen: int, recovery: str = "none"):
        return _read(self.variant(method, ratio, recovery) / "eval" / f"ppl_{dataset}_{seqlen}.json")

    def plan(self, method: str, ratio: float) -> dict[str, Any] | None:
        return _read(self.variant(method, ratio) / "model" / "plan.json")

    def latency(self, method: str, ratio: float) -> dict[str, Any] | None:
        return _read(self.variant(method, ratio) / "eval" / "latency.json")


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def study_results(config: dict[str, Any], model: str, root: str | Path | None = None) -> StudyResults:
    """The results of ``model`` in a validated study ``config`` whose outputs are under ``root``
    (default the study's own folder, ``results/<study>``)."""
    if model not in config["models"]:
        raise PrunebenchError(f"model {model!r} is not in the study (models: {', '.join(config['models'])})")
    model_dir = Path(config["models"][model]["path"])
    if not (model_dir / "config.json").is_file():
        raise PrunebenchError(f"{model_dir}/config.json not found: run the study first")
    num_layers = json.loads((model_dir / "config.json").read_text())["num_hidden_layers"]
    ppl = [
        (d, s)
        for d in config["evaluation"]["ppl"]["datasets"]
        for s in config["evaluation"]["ppl"]["seqlens"]
    ]
    return StudyResults(
        Path(study_root(config) if root is None else root), model, list(config["ratios"]), ppl, num_layers
    )


def paired_nll_difference(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float]:
    """Mean and standard error of ``a``'s minus ``b``'s per-window mean NLL (nats), same windows."""
    wa, wb = a.get("window_nll"), b.get("window_nll")
    if wa is None or wb is None or len(wa) != len(wb):
        raise PrunebenchError("perplexity results without matching per-window NLLs cannot be paired")
    diff = np.asarray(wa, dtype=float) - np.asarray(wb, dtype=float)
    se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else math.inf
    return float(diff.mean()), se


def outcome(mean: float, se: float) -> str:
    """``better`` when ``mean`` (claimed direction: negative) is beyond ``Z`` standard errors."""
    if mean + Z * se < 0:
        return "better"
    if mean - Z * se > 0:
        return "worse"
    return "tie"


def _ppl_comparison(label: str, name_a: str, a: dict, name_b: str, b: dict) -> Comparison:
    mean, se = paired_nll_difference(a, b)
    text = (
        f"{label}: {name_a} {a['ppl']:.1f} vs {name_b} {b['ppl']:.1f} "
        f"(ppl ratio {math.exp(mean):.3f}, 95% {math.exp(mean - Z * se):.3f}-{math.exp(mean + Z * se):.3f})"
    )
    return Comparison(text, outcome(mean, se))


def check_lower_ppl(results: StudyResults, spec: dict[str, Any]) -> list[Comparison]:
    out = []
    for ratio in spec.get("ratios", results.ratios):
        for dataset, seqlen in results.ppl:
            a = results.ppl_result(spec["method"], ratio, dataset, seqlen)
            for other in spec["than"]:
                b = results.ppl_result(other, ratio, dataset, seqlen)
                if a is not None and b is not None:
                    label = f"r{ratio_tag(ratio)} {dataset}/{seqlen}"
                    out.append(_ppl_comparison(label, spec["method"], a, other, b))
    return out


def check_recovery_gain(results: StudyResults, spec: dict[str, Any]) -> list[Comparison]:
    out = []
    model_dir = results.root / results.model
    methods = sorted(p.name for p in model_dir.iterdir() if p.is_dir()) if model_dir.is_dir() else []
    for ratio in spec.get("ratios", [max(results.ratios)]):
        for method in methods:
            for dataset, seqlen in results.ppl:
                a = results.ppl_result(method, ratio, dataset, seqlen, spec["better"])
                b = results.ppl_result(method, ratio, dataset, seqlen, spec["than"])
                none = results.ppl_result(method, ratio, dataset, seqlen)
                if a is None or b is None:
                    continue
                label = f"{method} r{ratio_tag(ratio)} {dataset}/{seqlen}"
                if none is not None:
                    label += f" (none {none['ppl']:.1f})"
                out.append(_ppl_comparison(label, spec["better"], a, spec["than"], b))
    return out


def check_removed_sublayers(results: StudyResults, spec: dict[str, Any]) -> list[Comparison]:
    out = []
    half = results.num_layers / 2
    for ratio in spec.get("ratios", results.ratios):
        plan = results.plan(spec["method"], ratio)
        if plan is None:
            continue
        attn = [int(i) for i, lp in plan["layers"].items() if lp.get("kv_heads") == []]
        mlp = [int(i) for i, lp in plan["layers"].items() if lp.get("mlp_channels") == []]
        removed = attn + mlp
        deep = sum(i >= half for i in removed)
        text = (
            f"r{ratio_tag(ratio)}: {len(attn)} attention and {len(mlp)} MLP sublayers removed; "
            f"{deep} of {len(removed)} in the deeper half (layers {math.ceil(half)}-{results.num_layers - 1}); "
            f"attention removed from layers {sorted(attn)}"
        )
        signs = {np.sign(len(attn) - len(mlp)), np.sign(deep - len(removed) / 2)}
        outcome = "worse" if -1 in signs else "tie" if 0 in signs else "better"
        out.append(Comparison(text, outcome))
    return out


def _decode_spread(latency: dict[str, Any], batch_size: int) -> tuple[float, float, float] | None:
    """10th percentile, median and 90th percentile of the paired dense/pruned decode-time ratios."""
    rows = {
        m["model"]: m
        for m in latency["measurements"]
        if m["batch_size"] == batch_size and m["status"] == "ok"
    }
    if not {"model", "base"} <= set(rows):
        return None
    base, model = rows["base"]["decode_raw_s_per_token"], rows["model"]["decode_raw_s_per_token"]
    ratios = np.asarray(base, dtype=float) / np.asarray(model, dtype=float)
    p10, median, p90 = np.percentile(ratios, [10, 50, 90])
    return float(p10), float(median), float(p90)


def check_decode_speedup(results: StudyResults, spec: dict[str, Any]) -> list[Comparison]:
    out = []
    batch = spec.get("batch_size", 1)
    for ratio in spec.get("ratios", results.ratios):
        spreads = {}
        for method in [*spec["methods"], *spec["than"]]:
            latency = results.latency(method, ratio)
            spread = None if latency is None else _decode_spread(latency, batch)
            if spread is not None:
                spreads[method] = spread
        for fast in spec["methods"]:
            for slow in spec["than"]:
                if fast not in spreads or slow not in spreads:
                    continue
                (f10, fmed, f90), (s10, smed, s90) = spreads[fast], spreads[slow]
                outcome = "better" if f10 > s90 else "worse" if s10 > f90 else "tie"
                text = (
                    f"r{ratio_tag(ratio)} batch {batch}: {fast} {fmed:.2f}x ({f10:.2f}-{f90:.2f}) vs "
                    f"{slow} {smed:.2f}x ({s10:.2f}-{s90:.2f})"
                )
                out.append(Comparison(text, outcome))
    return out


CHECKS: dict[str, Callable[[StudyResults, dict[str, Any]], list[Comparison]]] = {
    "lower_ppl": check_lower_ppl,
    "recovery_gain": check_recovery_gain,
    "removed_sublayers": check_removed_sublayers,
    "decode_speedup": check_decode_speedup,
}


def verdict(comparisons: list[Comparison]) -> str:
    outcomes = {c.outcome for c in comparisons}
    if not outcomes:
        return "no data"
    if outcomes == {"better"}:
        return "holds"
    if outcomes == {"tie"}:
        return "inconclusive"
    if "better" not in outcomes:
        return "does not hold"
    return "partly"


def load_claims(path: str | Path) -> list[dict[str, Any]]:
    """The claims of a YAML file; an unknown check or a claim without id, claim or source is an error."""
    claims = yaml.safe_load(Path(path).read_text())
    if not isinstance(claims, list):
        raise PrunebenchError(f"{path}: expected a list of claims")
    for i, spec in enumerate(claims):
        missing = {"id", "claim", "source", "check"} - set(spec)
        if missing:
            raise PrunebenchError(f"{path}: claim {i} lacks {', '.join(sorted(missing))}")
        if spec["check"] not in CHECKS:
            raise PrunebenchError(
                f"{path}: claim {spec['id']}: unknown check {spec['check']!r} (known: {', '.join(CHECKS)})"
            )
    return claims


def evaluate(claims: list[dict[str, Any]], results: StudyResults) -> list[Verdict]:
    out = []
    for spec in claims:
        comparisons = CHECKS[spec["check"]](results, spec)
        out.append(Verdict(spec["id"], spec["claim"], spec["source"], verdict(comparisons), comparisons))
    return out


def markdown(verdicts: list[Verdict]) -> str:
    """A Markdown table: claim, source, verdict with its counts, and every comparison."""
    lines = ["| claim | source | on this study | evidence |", "|---|---|---|---|"]
    for v in verdicts:
        counts = ", ".join(
            f"{n} {o}"
            for o in ("better", "tie", "worse")
            if (n := sum(c.outcome == o for c in v.comparisons))
        )
        evidence = (
            "<br>".join(f"{c.outcome}: {c.text}" for c in v.comparisons) or "none of the needed variants"
        )
        lines.append(
            f"| {v.claim} | {v.source} | **{v.verdict}** ({counts or 'no comparison'}) | {evidence} |"
        )
    return "\n".join(lines) + "\n"
