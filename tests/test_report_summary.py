"""Where a plan cut: the attention and MLP fractions removed, in the plan, the summary table and the report."""

from __future__ import annotations

import pandas as pd
import pytest

from prunebench.report.headline import headline_column, headline_label, headline_rows
from prunebench.report.html import summary_table
from prunebench.report.tables import COLUMNS, summary
from prunebench.steps import prune_model

TINY = "tests/data/tiny-model"  # hidden 64, 4 heads of 16 in 2 KV groups, 128 channels, 4 layers


def test_plan_records_attention_and_mlp_fractions_removed(tmp_path):
    plan = prune_model(TINY, "magnitude-sp", 0.5, tmp_path / "m", params={"budget": "native"})
    # one of two KV groups: q and o lose 32 of 64 rows/columns, k and v 16 of 32 rows, of 64 inputs each
    group, attention = 2 * 32 * 64 + 2 * 16 * 64, 2 * 64 * 64 + 2 * 32 * 64 + 64  # + input RMSNorm
    channels, mlp = 64 * 3 * 64, 128 * 3 * 64 + 64  # + post-attention RMSNorm
    assert plan.achieved["attention_removed"] == pytest.approx(group / attention)
    assert plan.achieved["mlp_removed"] == pytest.approx(channels / mlp)
    depth = prune_model(TINY, "shortgpt", 0.25, tmp_path / "d", calib="resources/demo/corpus",
                        params={"nsamples": 2, "seqlen": 16})  # fmt: skip
    assert depth.achieved["attention_removed"] == depth.achieved["mlp_removed"] == pytest.approx(0.25)


def _rows(method: str, attention: float, mlp: float, ppl: float) -> list[dict]:
    row = dict.fromkeys(COLUMNS)
    row.update(model="m", method=method, method_label=method, target_ratio=0.2, recovery="none",
               achieved_decoder_ratio=0.2, achieved_total_ratio=0.15, attention_removed=attention,
               mlp_removed=mlp, total_params=1e6, kind="ppl", dataset="demo", seqlen=128, metric="ppl",
               value=ppl)  # fmt: skip
    return [row]


def test_summary_and_report_show_where_each_method_cut():
    frame = pd.DataFrame(_rows("wanda-sp", 1 / 3, 0.156, 2891.9) + _rows("flap", 0.033, 0.25, 62.7))
    table = summary(frame, headline="acc")
    assert list(table["attention_removed"]) == pytest.approx([1 / 3, 0.033])
    assert list(table["mlp_removed"]) == pytest.approx([0.156, 0.25])
    html = summary_table(table, "acc")
    assert ">attn. %</th>" in html and ">MLP %</th>" in html
    assert "33.3" in html and "15.6" in html


def _zeroshot(method: str, values: dict[tuple[str, str], float]) -> list[dict]:
    rows = []
    for (task, metric), value in values.items():
        row = dict.fromkeys(COLUMNS)
        row.update(model="m", method=method, method_label=method, target_ratio=0.2, recovery="none",
                   kind="zeroshot", task=task, metric=metric, value=value)  # fmt: skip
        rows.append(row)
    return rows


def test_headline_mean_covers_every_task_acc_norm_where_reported_acc_otherwise():
    # BoolQ and WinoGrande report only acc; the papers' 7-task mean counts them all.
    scores = {("boolq", "acc"): 0.7, ("winogrande", "acc"): 0.6, ("piqa", "acc"): 0.75, ("piqa", "acc_norm"): 0.8,
              ("hellaswag", "acc"): 0.5, ("hellaswag", "acc_norm"): 0.65}  # fmt: skip
    frame = pd.DataFrame(_zeroshot("flap", scores))
    table = summary(frame, headline="acc_norm")
    assert headline_column("acc_norm") == "mean_acc_norm_or_acc" in table
    assert table["mean_acc_norm_or_acc"].iloc[0] == pytest.approx((0.7 + 0.6 + 0.8 + 0.65) / 4)
    assert summary(frame, headline="acc")["mean_acc"].iloc[0] == pytest.approx((0.7 + 0.6 + 0.75 + 0.5) / 4)
    picked = headline_rows(frame, "acc_norm")
    assert dict(zip(picked["task"], picked["metric"], strict=True)) == {
        "boolq": "acc", "winogrande": "acc", "piqa": "acc_norm", "hellaswag": "acc_norm"}  # fmt: skip
    assert len(frame) == 6  # the per-task values, both metrics, stay in the tidy table
    assert "acc_norm where the task reports it, acc otherwise" in headline_label("acc_norm")
