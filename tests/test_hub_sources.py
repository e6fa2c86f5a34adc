"""The Hub data sources read as data files: each one's text from local files shaped like the Hub's
(same paths, columns and splits), joined as the papers' loaders join it. No test touches the Hub."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

from prunebench.data.hub import ALPACA, BOOKCORPUS, C4, HUB_REPOS, HUB_SOURCES, PTB, WIKITEXT2, hub_text
from prunebench.errors import PrunebenchError
from prunebench.revisions import ENV, study_revisions

PTB_ROWS = {
    "train": [
        "aer banknote berlitz calloway centrust cluett fromstein gitano guterman",
        "pierre <unk> N years old",
    ],
    "validation": [
        "consumers may want to move their telephones a little closer to the tv set",
        "<unk> <unk> watching abc 's monday night football can now vote",
    ],
    "test": ["no it was n't black monday", "but while the new york stock exchange did n't fall apart"],
}
WIKITEXT_ROWS = {
    "train": ["", " = Valkyria Chronicles III = \n", "", " Senjō no Valkyria 3 : Unrecorded Chronicles \n"],
    "validation": [
        "",
        " = Homarus gammarus = \n",
        "",
        " Homarus gammarus , known as the European lobster \n",
    ],
    "test": ["", " = Robert Boulter = \n", "", " Robert Boulter is an English film , television \n"],
}


def write_parquet(path, column, rows, **other):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({column: rows, **other}).to_parquet(path, index=False)


@pytest.fixture
def ptb_root(tmp_path):
    """PTB as the Hub's Parquet conversion lays it out: penn_treebank/<split>/0000.parquet."""
    for split, rows in PTB_ROWS.items():
        write_parquet(tmp_path / "penn_treebank" / split / "0000.parquet", "sentence", rows)
    return tmp_path


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_ptb_joins_sentences_with_blank_lines_as_llm_pruner_and_flap(ptb_root, split):
    text = PTB.text(split, root=ptb_root)
    assert text == "\n\n".join(PTB_ROWS[split])
    assert text.startswith(PTB.starts[split])


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_wikitext2_joins_rows_with_blank_lines_and_starts_as_documented(tmp_path, split):
    write_parquet(
        tmp_path / "wikitext-2-raw-v1" / f"{split}-00000-of-00001.parquet", "text", WIKITEXT_ROWS[split]
    )
    text = WIKITEXT2.text(split, root=tmp_path)
    assert text == "\n\n".join(WIKITEXT_ROWS[split])
    assert text.startswith(WIKITEXT2.starts[split])


def test_c4_reads_the_first_1100_validation_documents_joined_with_spaces(tmp_path):
    path = tmp_path / "en" / "c4-validation.00000-of-00008.json.gz"
    path.parent.mkdir(parents=True)
    docs = [
        {"text": f"document {i}", "timestamp": "2019-04-25T12:57:54Z", "url": f"u{i}"} for i in range(1200)
    ]
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(doc) + "\n" for doc in docs)
    text = C4.text("validation", root=tmp_path)
    assert text == " ".join(f"document {i}" for i in range(1100))
    assert C4.text("test", root=tmp_path) == text  # C4 has no test split: validation shard 0


def test_bookcorpus_text_is_its_first_rows_one_per_line(tmp_path):
    rows = [
        BOOKCORPUS.starts["train"].rstrip("\n"),
        "but just one look at a minion sent him practically catatonic .",
    ]
    rows += [f"sentence {i} ." for i in range(BOOKCORPUS.max_rows["train"] + 5 - len(rows))]
    write_parquet(tmp_path / "plain_text" / "train" / "0000.parquet", "text", rows[:10])
    write_parquet(tmp_path / "plain_text" / "train" / "0001.parquet", "text", rows[10:])
    text = BOOKCORPUS.text("train", root=tmp_path)
    assert text.startswith(BOOKCORPUS.starts["train"])
    assert text.split("\n") == rows[: BOOKCORPUS.max_rows["train"]]  # the cap, across files, in order
    assert len(BOOKCORPUS.dataset("train", root=tmp_path)) == len(rows)  # the methods' rows: all of them


def test_alpaca_cleaned_records_and_text(tmp_path):
    records = [
        {"instruction": "Give three tips for staying healthy.", "input": "", "output": "1. Eat well."},
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    ]
    (tmp_path / "alpaca_data_cleaned.json").write_text(json.dumps(records))
    assert HUB_SOURCES["alpaca"].rows("train", root=tmp_path) == records
    text = hub_text("alpaca", "train", root=tmp_path)
    assert text == "Give three tips for staying healthy. 1. Eat well.\n\nAdd the numbers. 2 and 3 5"
    assert text.startswith(HUB_SOURCES["alpaca"].starts["train"])


def test_blockpruners_alpaca_is_tatsu_labs_formatted_text(tmp_path):
    write_parquet(tmp_path / "data" / "train-00000-of-00001-a09b74b3ef9c3b56.parquet", "text",
                  [ALPACA.starts["train"] + " completes the request."], instruction=["Give three tips"])  # fmt: skip
    assert ALPACA.dataset("train", root=tmp_path)["text"][0].startswith(ALPACA.starts["train"])


def test_hub_locations_use_the_parquet_branch_and_the_studys_pin(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert PTB.location("validation") == (
        "hf://datasets/ptb-text-only/ptb_text_only@refs%2Fconvert%2Fparquet/penn_treebank/validation/*.parquet"
    )
    assert WIKITEXT2.location("test").startswith("hf://datasets/Salesforce/wikitext@main/")
    pins = study_revisions({"models": {}, "data_revisions": {PTB.repo: "0123abc"}})
    monkeypatch.setenv(ENV, json.dumps(pins))  # as the workflow hands them to its jobs
    assert PTB.location("test").startswith("hf://datasets/ptb-text-only/ptb_text_only@0123abc/")


def test_every_source_names_its_paper_and_every_repo_is_known():
    for source in HUB_REPOS.values():
        assert source.paper and source.files
    assert set(HUB_REPOS) >= {s.repo for s in HUB_SOURCES.values()}


def test_missing_files_wrong_column_and_unknown_split_are_one_line_errors(tmp_path, ptb_root):
    with pytest.raises(PrunebenchError, match=r"cannot read .*penn_treebank/validation"):
        PTB.text("validation", root=tmp_path / "elsewhere")
    write_parquet(tmp_path / "w" / "wikitext-2-raw-v1" / "test-0.parquet", "sentence", ["a"])
    with pytest.raises(PrunebenchError, match=r"has no column 'text' \(columns: sentence\)"):
        WIKITEXT2.text("test", root=tmp_path / "w")
    with pytest.raises(PrunebenchError, match=r"bookcorpus/bookcorpus has no test split \(it has train\)"):
        BOOKCORPUS.text("test", root=ptb_root)


def test_every_hub_data_read_goes_through_the_registry():
    """No loader of its own elsewhere: ``load_dataset`` is called by the registry and, for lm-eval's
    own task data, by the preflight only."""
    import ast
    from pathlib import Path

    def calls(path: Path) -> bool:
        return any(
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "load_dataset"
            for node in ast.walk(ast.parse(path.read_text()))
        )

    src = Path(__file__).parents[1] / "src" / "prunebench"
    callers = {p.relative_to(src).as_posix() for p in src.rglob("*.py") if calls(p)}
    assert callers == {"data/hub.py", "study/preflight.py"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"models": {"tiny": {"path": "tests/data/tiny-model", "revision": "abc"}}},
            "config.models.tiny.revision: tests/data/tiny-model is a local directory: a revision is for a Hub model",
        ),
        (
            {"data_revisions": {"nobody/text": "abc"}},
            "config.data_revisions.nobody/text: not a Hub data set prunebench reads (known: Salesforce/wikitext,",
        ),
    ],
)
def test_revisions_only_for_hub_models_and_known_data_sets(change, message):
    from prunebench.study.config import validate_config

    raw = {
        "models": {"tiny": {"path": "tests/data/tiny-model"}},
        "methods": {"magnitude-sp": {}},
        "ratios": [0.3],
    }
    with pytest.raises(PrunebenchError) as caught:
        validate_config({**raw, **change}, files=False)
    assert message in str(caught.value)
    pins = {"data_revisions": {PTB.repo: "abc"}, "models": {"hub": {"path": "o/m", "revision": "v1"}}}
    assert validate_config({**raw, **pins}, files=False)["data_revisions"] == {PTB.repo: "abc"}
