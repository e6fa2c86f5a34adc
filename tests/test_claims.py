"""Papers' claims checked on synthetic study results: paired perplexity tests, counts, latency spreads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from prunebench.cli import main
from prunebench.errors import PrunebenchError
from prunebench.report.claims import Comparison as C
from prunebench.report.claims import (
    StudyResults,
    evaluate,
    load_claims,
    markdown,
    paired_nll_difference,
    verdict,
)

REPO = Path(__file__).resolve().parents[1]
NOISE = [0.3, -0.2, 0.1, -0.3, 0.2, 0.0, -0.1, 0.25]  # per-window variation shared by every model


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _ppl(
    root: Path, method: str, ratio: str, nll: float, recovery: str = "none", jitter: float = 0.0
) -> None:
    windows = [nll + n + jitter * (-1) ** i for i, n in enumerate(NOISE)]
    mean = sum(windows) / len(windows)
    _write(
        root / "m" / method / f"r{ratio}" / recovery / "eval" / "ppl_text_64.json",
        {"ppl": math.exp(mean), "nll": mean, "window_nll": windows, "seqlen": 64},
    )


def _results(root: Path) -> StudyResults:
    return StudyResults(root, "m", [0.2, 0.4], [("text", 64)], num_layers=10)


def test_paired_difference_removes_the_shared_window_variation():
    a = {"window_nll": [3.0 + n for n in NOISE]}
    b = {"window_nll": [3.1 + n for n in NOISE]}
    mean, se = paired_nll_difference(a, b)
    assert mean == pytest.approx(-0.1)
    assert se == pytest.approx(0.0, abs=1e-12)  # the unpaired spread of each model is 0.2
    with pytest.raises(PrunebenchError, match="per-window NLLs"):
        paired_nll_difference(a, {"window_nll": [1.0]})


def test_lower_ppl_tells_better_worse_and_tie(tmp_path):
    _ppl(tmp_path, "a", "0.20", 3.0)
    _ppl(tmp_path, "b", "0.20", 3.5)  # clearly worse than a
    _ppl(tmp_path, "c", "0.20", 2.5)  # clearly better than a
    _ppl(tmp_path, "d", "0.20", 3.0, jitter=0.05)  # the same on average: a tie
    claim = {
        "id": "x",
        "claim": "a wins",
        "source": "s",
        "check": "lower_ppl",
        "method": "a",
        "than": ["b", "c", "d"],
    }
    (result,) = evaluate([claim], _results(tmp_path))
    assert [c.outcome for c in result.comparisons] == ["better", "worse", "tie"]
    assert result.verdict == "partly"
    assert "r0.20 text/64: a 20.7 vs b 34.2 (ppl ratio 0.607" in result.comparisons[0].text
    only_b = evaluate([{**claim, "than": ["b"]}], _results(tmp_path))[0]
    assert only_b.verdict == "holds"
    assert evaluate([{**claim, "than": ["missing"]}], _results(tmp_path))[0].verdict == "no data"


def test_recovery_gain_compares_the_two_recoveries_of_each_method(tmp_path):
    for method, cpt in (("a", 2.0), ("b", 2.6)):
        _ppl(tmp_path, method, "0.40", 4.0)
        _ppl(tmp_path, method, "0.40", 2.5, recovery="lora")
        _ppl(tmp_path, method, "0.40", cpt, recovery="cpt")
    claim = {
        "id": "r",
        "claim": "cpt",
        "source": "s",
        "check": "recovery_gain",
        "better": "cpt",
        "than": "lora",
    }
    (result,) = evaluate([claim], _results(tmp_path))
    assert [c.outcome for c in result.comparisons] == ["better", "worse"]
    assert result.comparisons[0].text.startswith("a r0.40 text/64 (none 56.3): cpt 7.6 vs lora 12.6")


def test_removed_sublayers_counts_attention_mlp_and_depth(tmp_path):
    layers = {
        "6": {"kv_heads": []},
        "8": {"kv_heads": []},
        "9": {"kv_heads": [], "mlp_channels": []},
        "2": {"kv_heads": [0]},
    }
    _write(tmp_path / "m" / "f" / "r0.20" / "none" / "model" / "plan.json", {"layers": layers})
    shallow = {"1": {"kv_heads": []}, "2": {"mlp_channels": []}, "3": {"mlp_channels": []}}
    _write(tmp_path / "m" / "f" / "r0.40" / "none" / "model" / "plan.json", {"layers": shallow})
    claim = {"id": "f", "claim": "attn deep", "source": "s", "check": "removed_sublayers", "method": "f"}
    (result,) = evaluate([claim], _results(tmp_path))
    assert [c.outcome for c in result.comparisons] == ["better", "worse"]
    assert result.comparisons[0].text.startswith(
        "r0.20: 3 attention and 1 MLP sublayers removed; 4 of 4 in the deeper half"
    )


def _latency(root: Path, method: str, base: list[float], model: list[float]) -> None:
    rows = [
        {"model": name, "batch_size": 1, "status": "ok", "decode_raw_s_per_token": raw}
        for name, raw in (("base", base), ("model", model))
    ]
    _write(root / "m" / method / "r0.20" / "none" / "eval" / "latency.json", {"measurements": rows})


def test_decode_speedup_compares_spreads(tmp_path):
    _latency(tmp_path, "depth", [1.0, 1.1, 0.9, 1.0, 1.05], [0.8, 0.85, 0.7, 0.8, 0.82])  # 1.28x
    _latency(tmp_path, "width", [1.0, 1.1, 0.9, 1.0, 1.05], [1.0, 1.05, 0.95, 0.98, 1.0])  # about 1.0x
    _latency(tmp_path, "noisy", [1.0, 1.0, 1.0, 1.0, 1.0], [0.6, 1.1, 0.8, 1.3, 0.7])
    claim = {"id": "d", "claim": "depth", "source": "s", "check": "decode_speedup", "methods": ["depth"],
             "than": ["width", "noisy"], "ratios": [0.2]}  # fmt: skip
    (result,) = evaluate([claim], _results(tmp_path))
    assert [c.outcome for c in result.comparisons] == ["better", "tie"]
    assert "r0.20 batch 1: depth 1.28x (1.25-1.29) vs width 1.02x" in result.comparisons[0].text


def test_verdicts_and_markdown():
    assert verdict([]) == "no data"
    assert verdict([C("", "tie"), C("", "tie")]) == "inconclusive"
    assert verdict([C("", "worse"), C("", "tie")]) == "does not hold"
    table = markdown(evaluate([], StudyResults(Path("."), "m", [0.2], [], 4)))
    assert table.startswith("| claim | source | on this study | evidence |")


def test_the_shipped_claims_load_and_a_bad_file_is_refused(tmp_path):
    claims = load_claims(REPO / "resources" / "claims" / "papers.yaml")
    assert {c["check"] for c in claims} == {
        "lower_ppl",
        "recovery_gain",
        "removed_sublayers",
        "decode_speedup",
    }
    (tmp_path / "bad.yaml").write_text(
        yaml.safe_dump([{"id": "x", "claim": "c", "source": "s", "check": "vibes"}])
    )
    with pytest.raises(PrunebenchError, match="claim x: unknown check 'vibes'"):
        load_claims(tmp_path / "bad.yaml")
    (tmp_path / "short.yaml").write_text(yaml.safe_dump([{"id": "x"}]))
    with pytest.raises(PrunebenchError, match="claim 0 lacks check, claim, source"):
        load_claims(tmp_path / "short.yaml")


def test_the_cli_needs_a_finished_study(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    args = ["claims", "--config", "config/tiny.yaml", "--claims", "resources/claims/papers.yaml"]
    assert main([*args, "--results", str(tmp_path)]) == 0  # the tiny model exists; its results do not
    assert "**no data**" in capsys.readouterr().out
    assert main([*args, "--model", "other"]) == 2
    assert "model 'other' is not in the study" in capsys.readouterr().err
