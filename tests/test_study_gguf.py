"""A study whose model is a GGUF file (imported by its own rule) and whose method entry is an ablation."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from gguf_fixtures import write_gguf
from test_study import _snakemake, _workdir

from prunebench.models import load_pretrained
from prunebench.plan import PruningPlan

TINY = "tests/data/tiny-model"


@pytest.mark.slow
def test_a_gguf_model_is_imported_once_and_an_ablation_runs_its_registered_method(tmp_path):
    from test_study import REPO

    gguf_file = write_gguf(
        load_pretrained(REPO / TINY)[0], REPO / TINY / "tokenizer.json", tmp_path / "t.gguf"
    )
    config = {
        "study": "gguf",
        "title": "gguf study",
        "models": {"tg": {"gguf": {"file": str(gguf_file)}}},
        "calibration": {"source": "resources/demo/corpus", "nsamples": 4, "seqlen": 32},
        "methods": {
            "flap-nocomp": {
                "method": "flap",
                "params": {"bias_compensation": False},
                "label": "FLAP w/o comp.",
            }
        },
        "ratios": [0.3],
        "evaluation": {
            "ppl": {"datasets": {"demo": "resources/demo/corpus"}, "seqlens": [32], "max_windows": 2},
            "latency": {"enabled": False},
        },
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    workdir = _workdir(tmp_path / "w")
    result = _snakemake(workdir, "--cores", "2", "--configfile", str(tmp_path / "study.yaml"))
    assert result.returncode == 0, result.stderr[-4000:]
    imported = workdir / "results" / "gguf" / "tg" / "imported"
    assert json.loads((imported / "provenance.json").read_text())["source"]["file"] == str(gguf_file)
    plan = PruningPlan.load(
        workdir / "results" / "gguf" / "tg" / "flap-nocomp" / "r0.30" / "none" / "model" / "plan.json"
    )
    assert plan.method == "flap" and plan.compensation is None and plan.params["bias_compensation"] is False
    table = pd.read_csv(workdir / "results" / "gguf" / "tables" / "results.csv")
    assert set(table["method"]) == {"dense", "flap-nocomp"}
    assert set(table.loc[table["method"] == "flap-nocomp", "method_label"]) == {"FLAP w/o comp."}
    report = (workdir / "results" / "gguf" / "report" / "index.html").read_text()
    assert "flap with bias_compensation=False" in report
    assert "Model tg: results/gguf/tg/imported, imported from t.gguf (sha256" in report
    assert "F32 ×" in report and "dequantized to float32" in report
