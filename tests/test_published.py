"""Published numbers beside a study's: loading and validating the CSVs, the join, the difference."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from prunebench.errors import PrunebenchError
from prunebench.report.published import COLUMNS, compare, load_published, published_html

REPO = Path(__file__).resolve().parents[1]


def _row(**changes) -> dict[str, str]:
    row = {
        "paper": "P (2024)", "table": "Table 1", "model": "Llama-2-7B", "method": "flap", "ratio": "0.2",
        "recovery": "none", "metric": "ppl", "task": "wikitext2", "seqlen": "128",
        "protocol": "WikiText2 test, 128-token windows", "value": "14.62", "source": "https://example.org",
        "note": "",
    }  # fmt: skip
    return row | changes


def _write(directory: Path, rows: list[dict[str, str]], name: str = "p.csv", columns=COLUMNS) -> Path:
    directory.mkdir(exist_ok=True)
    with (directory / name).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return directory


def _acc_rows(
    method: str, ratio: str, values: dict[str, str], metric: str = "accuracy"
) -> list[dict[str, str]]:
    return [
        _row(
            method=method,
            ratio=ratio,
            metric=metric,
            task=task,
            seqlen="",
            value=value,
            protocol="lm-eval, %",
        )
        for task, value in values.items()
    ]


def _results(rows: list[dict]) -> pd.DataFrame:
    """A tidy results table with only the columns the join reads."""
    base = {"kind": None, "dataset": None, "seqlen": None, "task": None, "metric": None}
    return pd.DataFrame([base | r for r in rows])


def _study(model="llama2-7b", method="flap", ratio=0.2, recovery="none") -> dict:
    return {"model": model, "method": method, "target_ratio": ratio, "recovery": recovery}


STUDY = _results(
    [
        _study() | {"kind": "ppl", "dataset": "wikitext2", "seqlen": 128, "metric": "ppl", "value": 15.0},
        _study() | {"kind": "ppl", "dataset": "wikitext2", "seqlen": 2048, "metric": "ppl", "value": 9.0},
        _study() | {"kind": "zeroshot", "task": "piqa", "metric": "acc_norm", "value": 0.70},
        _study() | {"kind": "zeroshot", "task": "piqa", "metric": "acc", "value": 0.68},
        _study() | {"kind": "zeroshot", "task": "boolq", "metric": "acc", "value": 0.60},
        _study(method="dense", ratio=0.0) | {"kind": "ppl", "dataset": "wikitext2", "seqlen": 128, "metric": "ppl",
                                              "value": 12.0},
        _study(model="other") | {"kind": "ppl", "dataset": "wikitext2", "seqlen": 128, "metric": "ppl", "value": 99.0},
    ]
)  # fmt: skip


def test_the_join_matches_model_method_ratio_recovery_and_protocol(tmp_path):
    rows = [
        _row(),  # matched: ours 15.0 at the same window
        _row(seqlen="2048", value="8.5"),  # matched at the other window
        _row(task="ptb", value="30"),  # the study has no PTB
        _row(recovery="lora", value="13"),  # the study has no recovered flap
        _row(ratio="0.5", value="31.8"),  # the study has no 0.5
        _row(method="dense", ratio="0", value="12.62"),
        _row(model="LLaMA-7B", value="1.5"),  # another model
    ]
    published = load_published(_write(tmp_path / "pub", rows))
    table = compare(published, STUDY, {"llama2-7b": "Llama-2-7B"})
    got = {(r.method, r.seqlen, r.published): r.reproduced for r in table.itertuples()}
    assert got == {("flap", 128, 14.62): 15.0, ("flap", 2048, 8.5): 9.0, ("dense", 128, 12.62): 12.0}
    assert set(table["model"]) == {"llama2-7b"}


def test_the_difference_is_reproduced_minus_published_and_accuracies_are_in_percent(tmp_path):
    rows = [_row(), *_acc_rows("flap", "0.2", {"piqa": "72.5"}, metric="acc_norm")]
    table = compare(load_published(_write(tmp_path / "pub", rows)), STUDY, {"llama2-7b": "Llama-2-7B"})
    by_task = table.set_index("task")
    assert by_task.loc["wikitext2", "difference"] == pytest.approx(15.0 - 14.62)
    assert by_task.loc["piqa", "reproduced"] == pytest.approx(70.0)  # acc_norm, not acc
    assert by_task.loc["piqa", "difference"] == pytest.approx(70.0 - 72.5)


def test_a_ratio_within_the_tolerance_matches_and_one_beyond_it_does_not(tmp_path):
    rows = [_row(ratio="0.2199", value="11.51"), _row(ratio="0.25", value="20")]
    table = compare(load_published(_write(tmp_path / "pub", rows)), STUDY, {"llama2-7b": "Llama-2-7B"})
    assert list(table["published_ratio"]) == [0.2199]
    assert list(table["our_ratio"]) == [0.2]  # both ratios are shown


def test_unspecified_accuracy_is_compared_with_the_headline_metric(tmp_path):
    rows = _acc_rows("flap", "0.2", {"piqa": "75"})
    published = load_published(_write(tmp_path / "pub", rows))
    norm = compare(published, STUDY, {"llama2-7b": "Llama-2-7B"}, headline="acc_norm")
    plain = compare(published, STUDY, {"llama2-7b": "Llama-2-7B"}, headline="acc")
    assert (norm["our_metric"].item(), norm["reproduced"].item()) == ("acc_norm", pytest.approx(70.0))
    assert (plain["our_metric"].item(), plain["reproduced"].item()) == ("acc", pytest.approx(68.0))


def test_a_mean_is_compared_only_when_the_study_has_every_task_of_its_row(tmp_path):
    complete = _acc_rows("flap", "0.2", {"piqa": "70", "boolq": "62", "mean": "66"}, metric="accuracy")
    table = compare(
        load_published(_write(tmp_path / "a", complete)), STUDY, {"llama2-7b": "Llama-2-7B"}, "acc"
    )
    mean = table[table["task"] == "mean"]
    assert mean["reproduced"].item() == pytest.approx((68.0 + 60.0) / 2)
    assert mean["difference"].item() == pytest.approx(64.0 - 66.0)

    partial = _acc_rows("flap", "0.2", {"piqa": "70", "hellaswag": "60", "mean": "65"})
    table = compare(
        load_published(_write(tmp_path / "b", partial)), STUDY, {"llama2-7b": "Llama-2-7B"}, "acc"
    )
    assert list(table["task"]) == ["piqa"]


def test_no_match_gives_an_empty_table_and_no_report_section(tmp_path):
    published = _write(tmp_path / "pub", [_row(model="LLaMA-7B")])
    assert compare(load_published(published), STUDY, {"llama2-7b": "Llama-2-7B"}).empty
    results_csv = tmp_path / "results.csv"
    STUDY.to_csv(results_csv, index=False)
    config = {
        "models": {"llama2-7b": {"published_as": "Llama-2-7B"}},
        "evaluation": {"zeroshot": {"headline": "acc_norm"}},
    }
    assert published_html(config, str(results_csv), published) == ""
    config["models"]["llama2-7b"] = {}  # no published_as: nothing is read at all
    assert published_html(config, str(results_csv), tmp_path / "missing") == ""
    _write(published, [_row()], name="q.csv")
    config["models"]["llama2-7b"] = {"published_as": "Llama-2-7B"}
    html = published_html(config, str(results_csv), published)
    assert "<table" in html and "14.62" in html and "15.00" in html


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ratio": "twenty"}, "line 2: ratio 'twenty' is not a number"),
        ({"ratio": "20"}, "line 2: ratio 20.0 is not a fraction in [0, 1)"),
        ({"value": ""}, "line 2: value is empty"),
        ({"value": "nan"}, "line 2: value 'nan' is not finite"),
        ({"metric": "f1"}, "line 2: metric 'f1' is not one of ppl, acc, acc_norm, accuracy"),
        ({"seqlen": ""}, "line 2: a perplexity needs its window, seqlen '' is not a positive integer"),
        ({"metric": "acc", "value": "72.5"}, "line 2: seqlen is only for perplexities, got '128' for acc"),
        ({"metric": "acc", "seqlen": "", "value": "0.72"}, None),  # a fraction is a valid (if odd) percentage
        (
            {"metric": "acc", "seqlen": "", "value": "172"},
            "line 2: accuracy 172.0 is not a percentage in [0, 100]",
        ),
        ({"value": "0.5"}, "line 2: perplexity 0.5 is below 1"),
        ({"table": " "}, "line 2: table is empty"),
    ],
)
def test_a_malformed_row_is_one_clear_error_naming_file_and_line(tmp_path, change, message):
    directory = _write(tmp_path / "pub", [_row(), _row(**change)][::-1])
    if message is None:
        assert len(load_published(directory)) == 2
        return
    with pytest.raises(PrunebenchError) as error:
        load_published(directory)
    assert str(error.value) == f"{directory / 'p.csv'} {message}"


def test_a_missing_column_or_a_short_row_is_an_error(tmp_path):
    columns = [c for c in COLUMNS if c != "protocol"]
    with pytest.raises(PrunebenchError, match=r"p\.csv: missing column\(s\) protocol$"):
        load_published(_write(tmp_path / "a", [_row()], columns=columns))
    directory = _write(tmp_path / "b", [_row()])
    with (directory / "p.csv").open("a") as handle:
        handle.write("P,Table 1,Llama-2-7B,flap\n")
    with pytest.raises(PrunebenchError, match=r"p\.csv line 3: expected 13 fields$"):
        load_published(directory)


def test_the_shipped_published_tables_load_and_every_mean_agrees_with_its_tasks():
    """Every shipped row is valid; a table's average column equals the mean of its tasks (to rounding)."""
    published = load_published(REPO / "resources" / "published")
    assert {"flap", "blockpruner", "llm-pruner", "shortened-ppl", "shortened-taylor", "dense"} <= set(
        published["method"]
    )
    assert published["source"].str.startswith("https://").all()
    accuracy = published[published["metric"] != "ppl"]
    keys = ["file", "table", "model", "method", "ratio", "recovery", "note"]
    for key, group in accuracy.groupby(keys):
        tasks = group[group["task"] != "mean"]["value"]
        mean = group[group["task"] == "mean"]["value"]
        assert len(mean) == 1, key
        assert tasks.mean() == pytest.approx(mean.item(), abs=0.011), key


def test_the_report_shows_the_section_only_when_a_model_matches(tmp_path, monkeypatch):
    import yaml
    from report_fixtures import synthetic

    from prunebench.report.html import render_report
    from prunebench.report.tables import summary
    from prunebench.study import validate_config

    monkeypatch.chdir(REPO)
    config = validate_config(yaml.safe_load((REPO / "config" / "tiny.yaml").read_text()))
    config["models"]["tiny"]["path"] = str(REPO / config["models"]["tiny"]["path"])
    results, _ = synthetic()
    results = results[results["model"] == "m1"].replace({"model": {"m1": "tiny"}, "method": {"a": "flap"}})
    results.to_csv(tmp_path / "results.csv", index=False)
    summary(results, "acc_norm").to_csv(tmp_path / "summary.csv", index=False)
    ours = results.query(
        "method == 'flap' and target_ratio == 0.2 and recovery == 'none' and dataset == 'd1'"
    )
    (tmp_path / "plots").mkdir()
    monkeypatch.chdir(tmp_path)  # published_html reads resources/published from the working directory
    (tmp_path / "resources").mkdir()
    paper = _row(model="Tiny-Paper-Name", task="d1", seqlen="64", protocol="d1, 64-token windows")
    _write(tmp_path / "resources" / "published", [paper])

    def render(name: str) -> str:
        out = tmp_path / name
        args = (
            config,
            str(tmp_path / "summary.csv"),
            str(tmp_path / "plots"),
            str(REPO / "report" / "index.html.j2"),
        )
        render_report(*args, str(out), results_csv=str(tmp_path / "results.csv"))
        return out.read_text()

    assert "Published numbers beside ours" not in render("without.html")
    config["models"]["tiny"]["published_as"] = "Tiny-Paper-Name"
    html = render("with.html")
    assert "Published numbers beside ours" in html and "14.62" in html
    assert f"{ours['value'].item():.2f}" in html
