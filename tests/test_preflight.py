"""The preflight opens every model, text and task a study names and records what it opened.

Offline (no test touches the Hub): local paths are opened for real; the Hub's answers (a commit, the
files of a data set) are stood in for by local files and a fixed commit."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from prunebench.data import hub
from prunebench.data.hub import PTB, HubSource
from prunebench.errors import PrunebenchError
from prunebench.study import preflight as pf
from prunebench.study.config import validate_config

TINY = "tests/data/tiny-model"
CORPUS = "resources/demo/corpus"
TASKS = "resources/demo/tasks"


def study(**changes) -> dict:
    """The tiny study's shape, defaults filled (schema only: the preflight is what opens things)."""
    raw = {
        "models": {"tiny": {"path": TINY}},
        "methods": {"magnitude-sp": {}},
        "ratios": [0.3],
        "calibration": {"mode": "shared", "source": CORPUS, "nsamples": 2, "seqlen": 16},
        "evaluation": {
            "ppl": {"datasets": {"demo": CORPUS}, "seqlens": [16]},
            "zeroshot": {"tasks": ["demo_cloze"], "include_path": TASKS},
        },
    }
    for key, value in changes.items():
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return validate_config(raw, files=False)


def test_a_local_study_opens_and_is_recorded():
    record = pf.preflight(study())
    assert record["models"]["tiny"] == {"source": TINY, "kind": "local directory"}
    assert record["data"] == {
        f"{CORPUS}/train.txt.gz": {"kind": "local text"},
        f"{CORPUS}/test.txt.gz": {"kind": "local text"},
    }
    assert record["tasks"]["demo_cloze"]["split"] == "test"


def test_missing_model_task_and_text_are_one_line_each_all_at_once(tmp_path):
    # Each would be refused when the DAG is built; here they go missing after it (a cluster node without
    # the shared folder, a task folder changed): the preflight, run where the jobs run, names them.
    config = study()
    config["models"]["tiny"]["path"] = str(tmp_path / "no-model")
    config["evaluation"]["zeroshot"]["tasks"] = ["demo_clozee"]
    config["evaluation"]["ppl"]["datasets"] = {"demo": str(tmp_path / "no-text.txt")}
    with pytest.raises(PrunebenchError) as caught:
        pf.preflight(config)
    lines = str(caught.value).splitlines()
    assert lines[0] == "preflight found 3 problems:"
    assert lines[1].strip().startswith(f"config.models.tiny.path: model not found: {tmp_path}/no-model")
    assert lines[2].strip().startswith("config.evaluation.ppl.datasets.demo: text source")
    assert "no-text.txt" in lines[2]
    assert (
        lines[3]
        .strip()
        .startswith("config.evaluation.zeroshot.tasks: lm-eval does not know the task 'demo_clozee'")
    )
    assert "close matches: demo_cloze" in lines[3]


def test_a_task_without_its_split_and_an_undecodable_text(tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "t.yaml").write_text(
        "task: no_test\ndataset_path: json\ndataset_kwargs: {data_files: {train: " + str(tmp_path / "t.jsonl") + "}}\n"
        "output_type: multiple_choice\ntest_split: test\ndoc_to_text: q\ndoc_to_choice: [a]\ndoc_to_target: 0\n"
    )  # fmt: skip
    (tmp_path / "t.jsonl").write_text('{"q": 1}\n')
    (tmp_path / "latin1.txt").write_bytes("café au lait".encode("latin-1"))
    config = study(**{"evaluation.zeroshot": {"tasks": ["no_test"], "include_path": str(tasks)},
                      "evaluation.ppl.datasets": {"l": str(tmp_path / "latin1.txt")}})  # fmt: skip
    with pytest.raises(PrunebenchError) as caught:
        pf.preflight(config)
    message = str(caught.value)
    assert "preflight found 2 problems" in message
    assert "config.evaluation.ppl.datasets.l:" in message and "is not utf-8 text" in message
    assert "config.evaluation.zeroshot.tasks.no_test: cannot open json test: Bad split: test" in message


def test_a_hub_model_not_in_the_cache_offline_is_named(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    from prunebench.models import hub as model_hub

    model_hub.look_up.cache_clear()
    with pytest.raises(PrunebenchError, match=r"config.models.tiny.path: model not found: nobody/no-such-model: .*"
                       r"not in the local Hugging Face cache \(HF_HUB_OFFLINE is set\)"):  # fmt: skip
        pf.preflight(study(**{"models.tiny.path": "nobody/no-such-model", "evaluation.zeroshot.tasks": []}))


@pytest.fixture
def hub_from(monkeypatch, tmp_path):
    """The Hub stood in for: data files under ``tmp_path`` (laid out as in the repository) and a fixed
    commit for every revision."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    location = HubSource.location
    monkeypatch.setattr(HubSource, "location", lambda self, split, revision=None, root=None: location(
        self, split, revision, root or tmp_path / self.repo))  # fmt: skip
    monkeypatch.setattr(pf, "_commit", lambda kind, repo, revision: f"{repo}@{revision}:c0ffee")
    return tmp_path


def test_hub_data_sets_are_opened_at_their_served_revision_and_recorded(hub_from):
    path = hub_from / PTB.repo / "penn_treebank" / "validation" / "0000.parquet"
    path.parent.mkdir(parents=True)
    pd.DataFrame({"sentence": [PTB.starts["validation"].strip(), "second sentence"]}).to_parquet(path)
    record = pf.preflight(study(**{"evaluation.ppl": {"datasets": {"ptb": "ptb"}, "split": "validation"}}))
    assert record["data"][PTB.repo] == {
        "kind": "hub data set",
        "revision": "refs/convert/parquet",
        "commit": f"{PTB.repo}@refs/convert/parquet:c0ffee",
        "splits": ["validation"],
    }


def test_a_data_set_is_opened_at_its_own_split(hub_from):
    path = hub_from / PTB.repo / "penn_treebank" / "validation" / "0000.parquet"
    path.parent.mkdir(parents=True)
    pd.DataFrame({"sentence": [PTB.starts["validation"].strip(), "second sentence"]}).to_parquet(path)
    ppl = {"datasets": {"demo": CORPUS, "ptb": "ptb"}, "split": "test", "splits": {"ptb": "validation"}}
    record = pf.preflight(study(**{"evaluation.ppl": ppl}))
    assert record["data"][PTB.repo]["splits"] == ["validation"]
    assert f"{CORPUS}/test.txt.gz" in record["data"]


def test_a_split_for_a_data_set_the_study_does_not_evaluate_is_refused():
    with pytest.raises(PrunebenchError) as caught:
        study(**{"evaluation.ppl": {"datasets": {"demo": CORPUS}, "splits": {"ptb": "validation"}}})
    assert "config.evaluation.ppl.splits: ['ptb'] not among config.evaluation.ppl.datasets ['demo']" in str(
        caught.value
    )


def test_an_unknown_split_of_one_data_set_is_named_under_splits():
    raw = {
        "models": {"tiny": {"path": TINY}},
        "methods": {"magnitude-sp": {}},
        "ratios": [0.3],
        "evaluation": {"ppl": {"datasets": {"demo": CORPUS}, "splits": {"demo": "dev"}}},
    }
    with pytest.raises(PrunebenchError) as caught:
        validate_config(raw)
    assert (
        "config.evaluation.ppl.splits.demo: unknown split 'dev'; choose one of train, validation, test"
        in str(caught.value)
    )


def test_a_hub_split_that_does_not_open_or_starts_otherwise(hub_from, capsys):
    path = hub_from / PTB.repo / "penn_treebank" / "test" / "0000.parquet"
    path.parent.mkdir(parents=True)
    pd.DataFrame({"sentence": ["a sentence the papers never read"]}).to_parquet(path)
    datasets = {"ptb": "ptb", "wiki": "wikitext2", "wiki-again": "wikitext2"}
    config = study(**{"evaluation.ppl": {"datasets": datasets, "split": "test"}})
    with pytest.raises(PrunebenchError) as caught:
        pf.preflight(config)
    lines = str(caught.value).splitlines()
    assert lines[0] == "preflight found 1 problem:"  # one split of one data set: one line, naming both keys
    wikitext = f"{hub_from}/Salesforce/wikitext/wikitext-2-raw-v1/test-*.parquet"
    keys = "config.evaluation.ppl.datasets.wiki, config.evaluation.ppl.datasets.wiki-again"
    assert lines[1].strip().startswith(f"{keys}: cannot read {wikitext}")
    assert (
        "ptb-text-only/ptb_text_only test starts 'a sentence the papers never read'"
        in capsys.readouterr().err
    )


def test_preflight_record_is_written_atomically_as_json(tmp_path):
    out = tmp_path / "results" / "preflight.json"
    pf.write_preflight(study(**{"evaluation.zeroshot.tasks": []}), out)
    assert json.loads(out.read_text())["models"]["tiny"]["kind"] == "local directory"
    assert [p.name for p in out.parent.iterdir()] == ["preflight.json"]


def test_text_uses_cover_calibration_recovery_and_perplexity():
    config = study(
        **{"recovery": {"none": {}, "cpt": {"data": CORPUS, "tokens": 64, "seqlen": 16, "batch_size": 1}}}
    )
    keys = {(u.key, u.split) for u in pf.text_uses(config)}
    assert ("config.calibration.source", "train") in keys
    assert ("config.recovery.cpt.data", "train") in keys
    assert ("config.evaluation.ppl.datasets.demo", "test") in keys


def test_blockpruner_reads_tatsu_alpaca_for_alpaca():
    config = study(
        **{
            "calibration": {"mode": "paper"},
            "methods": {"blockpruner": {"params": {"calib_dataset": "alpaca"}}},
        }
    )
    (use,) = [u for u in pf.text_uses(config) if u.key.startswith("config.methods")]
    assert pf._hub_source(use, config) is hub.ALPACA


def test_continued_pretraining_corpora_are_opened_as_their_streams(hub_from):
    config = study(
        **{
            "recovery": {
                "none": {},
                "cpt": {"data": "slimpajama", "tokens": 64, "seqlen": 16, "batch_size": 1},
                "lora": {"data": "c4", "steps": 2, "seqlen": 16, "batch_size": 1},
            }
        }
    )
    sources = {
        u.key: pf._hub_source(u, config) for u in pf.text_uses(config) if u.key.startswith("config.rec")
    }
    assert sources == {"config.recovery.cpt.data": hub.SLIMPAJAMA, "config.recovery.lora.data": hub.C4}
    zstandard = pytest.importorskip("zstandard")
    for split in ("train", "validation"):
        shard = hub_from / hub.SLIMPAJAMA.repo / split / "chunk1" / f"example_{split}_0.jsonl.zst"
        shard.parent.mkdir(parents=True)
        shard.write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "a first document"}\n'))
    record = pf.preflight(study(**{"recovery": {"none": {}, "cpt": config["recovery"]["cpt"]}}))
    assert record["data"][hub.SLIMPAJAMA.repo]["splits"] == ["train", "validation"]


def test_report_provenance_lists_the_commit_of_each_hub_model_and_data_set():
    from prunebench.report.html import _data_sources, _model_sources

    config = {"models": {"hub": {"path": "meta-llama/Llama-2-7b-hf"}, "tiny": {"path": TINY}}}
    record = {
        "models": {
            "hub": {"kind": "hub model", "source": "meta-llama/Llama-2-7b-hf", "revision": "main", "commit": "01c7f73"},
            "tiny": {"kind": "local directory", "source": TINY},
        },
        "data": {
            PTB.repo: {"kind": "hub data set", "revision": "refs/convert/parquet", "commit": "9a1b2c3",
                       "splits": ["validation"]},
            f"{CORPUS}/test.txt.gz": {"kind": "local text"},
        },
    }  # fmt: skip
    assert _model_sources(config, record) == [
        "hub: meta-llama/Llama-2-7b-hf, revision main = commit 01c7f73",
        f"tiny: {TINY}, local",
    ]
    assert _data_sources(record) == [
        f"{PTB.repo} (validation), revision refs/convert/parquet = commit 9a1b2c3",
        f"{CORPUS}/test.txt.gz (local)",
    ]
