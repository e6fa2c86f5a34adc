"""The report on a synthetic two-model, two-data-set, two-recovery study: rankings with ties, per-model
facets, one style per method everywhere, pooled speed-ups, per-setting tables, captions."""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
import matplotlib.colors
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from report_fixtures import DATASETS, MODELS, RATIOS, RECOVERIES, TASKS, config, synthetic

from prunebench.report import plots
from prunebench.report.findings import findings, ranks
from prunebench.report.html import findings_sections, ppl_table, summary_table, task_table
from prunebench.report.styles import method_styles
from prunebench.report.tables import _pooled_rows, summary

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    results, windows = synthetic()
    return results, windows, findings(results, windows, ("d1", 64), "acc_norm")


def test_ranks_count_only_wins_beyond_the_uncertainty():
    better = {("a", "b"): True, ("c", "b"): True}
    assert ranks(["a", "b", "c"], better) == {"a": 1, "b": 3, "c": 1}
    assert ranks(["a", "b"], {}) == {"a": 1, "b": 1}


def test_methods_are_ranked_per_model_ratio_and_recovery_with_ties(study):
    _, _, table = study
    settings = table.groupby(["model", "target_ratio", "recovery"])
    assert len(settings) == len(MODELS) * len(RATIOS) * len(RECOVERIES)
    for _, group in settings:
        ranked = group[group["method"] != "dense"].set_index("method")
        # a beats b beyond the paired interval; c differs from a by window noise of mean 0: a tie.
        assert ranked.loc[["a", "c", "b"], "ppl_rank"].tolist() == [1, 1, 3]
        assert ranked.loc[["a", "c", "b"], "accuracy_rank"].tolist() == [1, 1, 3]
        dense = group[group["method"] == "dense"]
        assert len(dense) == 1 and dense["ppl_rank"].isna().all() and dense["decode_speedup"].item() == 1.0
    answer = findings_sections(table)[0]["answer"]
    assert answer.startswith("lowest perplexity: A (tied within the uncertainty with C); highest accuracy: A")


def test_a_difference_within_the_uncertainty_is_a_tie_and_beyond_it_is_not(study):
    results, windows, _ = study
    # b's accuracy: within 1.96 combined standard errors of a's (a tie), then well beyond it.
    for gap, expected in ((0.01, 1), (0.1, 3)):
        moved = results.copy()
        b = (moved["method"] == "b") & (moved["kind"] == "zeroshot")
        moved.loc[b, "value"] = (
            moved.loc[(moved["method"] == "a") & (moved["kind"] == "zeroshot"), "value"].to_numpy() - gap
        )
        table = findings(moved, windows, ("d1", 64), "acc_norm")
        ranked = table[(table["method"] == "b") & (table["recovery"] == "none")]
        assert set(ranked["accuracy_rank"]) == {expected}


def test_recovered_rows_inherit_their_shape_speedup_and_identical_shapes_are_pooled(study):
    _, _, table = study
    speed = table.set_index(["model", "method", "target_ratio", "recovery"])["decode_speedup"]
    for model in MODELS:
        for method in ("a", "b", "c"):
            for ratio in RATIOS:
                assert speed[(model, method, ratio, "lora")] == speed[(model, method, ratio, "none")]
    # a and c share a plan shape: one pooled speed-up, flagged as two measurements.
    assert speed[("m1", "a", 0.2, "none")] == speed[("m1", "c", 0.2, "none")]
    pooled = table.set_index(["model", "method", "target_ratio", "recovery"])["shape_measurements"]
    assert pooled[("m1", "a", 0.2, "none")] == 2 and pooled[("m1", "b", 0.2, "none")] == 1


def test_pooled_rows_pool_every_repeat_of_one_shape():
    def latency(ratios: list[float]) -> dict:
        base = [1.0] * len(ratios)
        return {"measurements": [
            {"model": "base", "status": "ok", "batch_size": 1, "prompt_length": 8, "prefill_raw_s": base,
             "decode_raw_s_per_token": base},
            {"model": "model", "status": "ok", "batch_size": 1, "prompt_length": 8,
             "prefill_raw_s": [1 / r for r in ratios], "decode_raw_s_per_token": [1 / r for r in ratios]},
        ]}  # fmt: skip

    same = {"model": "m", "shape": "s1"}
    rows = _pooled_rows([(same | {"method": "x"}, latency([1.1, 1.2, 1.3])), (same | {"method": "y"}, latency([1.5, 1.6, 1.7])),
                         ({"model": "m", "shape": "s2", "method": "z"}, latency([2.0, 2.0, 2.0]))])  # fmt: skip
    decode = {r["method"]: r for r in rows if r["metric"] == "pooled_decode"}
    assert (
        decode["x"]["value"]
        == decode["y"]["value"]
        == pytest.approx(np.median([1.1, 1.2, 1.3, 1.5, 1.6, 1.7]))
    )
    assert decode["x"]["n"] == 2 and decode["z"]["n"] == 1 and decode["z"]["value"] == pytest.approx(2.0)


def _series(fig: plt.Figure) -> list[tuple[plt.Axes, str, np.ndarray]]:
    """(axes, colour, y values) of every plotted line with a marker, per panel."""
    out = []
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_marker() not in ("None", None, "", "_", "|") and len(line.get_ydata()):  # not caps
                out.append(
                    (ax, matplotlib.colors.to_hex(line.get_color()), np.asarray(line.get_ydata(), float))
                )
    return out


def test_every_plot_is_faceted_by_model_and_never_joins_models(study):
    results, _, _ = study
    styles = method_styles(config())
    fig = plots.ppl_vs_ratio(results, styles)
    assert len(fig.axes) == len(MODELS) * len(DATASETS) * len(RECOVERIES)
    for ax, _, ys in _series(fig):
        model = ax.get_title().split(" · ")[0]
        allowed = results[(results["kind"] == "ppl") & (results["model"] == model)]["value"].to_numpy()
        assert all(np.isclose(allowed, y).any() for y in ys if np.isfinite(y)), ax.get_title()
    plt.close(fig)
    for make in (lambda: plots.accuracy_vs_ratio(results, "acc_norm", styles), lambda: plots.speedup_vs_ratio(results, styles),
                 lambda: plots.pareto(results, "acc_norm", styles), lambda: plots.cost(results)):  # fmt: skip
        fig = make()
        titles = {ax.get_title().split(" ")[0] for ax in fig.axes if ax.get_title()}
        assert titles == set(MODELS), titles
        plt.close(fig)


def test_a_method_has_one_colour_and_marker_in_every_plot(study):
    results, _, _ = study
    styles = method_styles(config())
    expected = {matplotlib.colors.to_hex(s["color"]) for s in styles.values()}
    assert len(expected) == len(styles)  # no two methods share a colour
    for fig in (plots.ppl_vs_ratio(results, styles), plots.accuracy_vs_ratio(results, "acc_norm", styles),
                plots.speedup_vs_ratio(results, styles)):  # fmt: skip
        colours = {c for _, c, _ in _series(fig)}
        assert colours <= expected | {"#808080", "#000000"}
        legend = fig.legends[0]
        for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True):
            method = {m.upper(): m for m in styles if m != "dense"}
            if text.get_text() in method:
                style = styles[method[text.get_text()]]
                assert matplotlib.colors.to_hex(handle.get_color()) == matplotlib.colors.to_hex(
                    style["color"]
                )
                assert handle.get_marker() == style["marker"]
        plt.close(fig)
    # A registered method's style does not depend on which other methods the study has (nor on dense).
    many = method_styles({"methods": {"flap": {}, "sleb": {}, "shortgpt": {}, "x": {"kind": "rule"}}})
    alone = method_styles({"methods": {"sleb": {}}})
    assert alone["sleb"] == many["sleb"] and alone["dense"] == many["dense"] == styles["dense"]
    assert len({matplotlib.colors.to_hex(s["color"]) for s in many.values()}) == len(many)


def test_legends_sit_outside_every_panel(study):
    results, _, _ = study
    fig = plots.ppl_vs_ratio(results, method_styles(config()))
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent()
    assert all(legend.x0 >= ax.get_window_extent().x1 for ax in fig.axes)
    plt.close(fig)


def test_chance_levels_are_drawn_and_listed(study):
    results, _, _ = study
    fig = plots.accuracy_vs_ratio(results, "acc_norm", method_styles(config()))
    level = np.mean([plots.chance_levels()[t] for t in TASKS])
    assert any(np.allclose(line.get_ydata(), level) for ax in fig.axes for line in ax.get_lines())
    plt.close(fig)
    html = task_table(results, "acc_norm")
    assert "boolq (chance 0.50)" in html and "hellaswag (chance 0.25)" in html


def test_tables_have_human_headers_units_and_per_setting_columns(study):
    results, _, _ = study
    table = summary(results, "acc_norm")
    dense = table[table["method"] == "dense"]
    assert (dense["speedup_decode"] == 1.0).all()
    lora = table[table["recovery"] == "lora"].set_index(["model", "method", "target_ratio"])["speedup_decode"]
    none = table[table["recovery"] == "none"].set_index(["model", "method", "target_ratio"])["speedup_decode"]
    pd.testing.assert_series_equal(lora.sort_index(), none.drop(index="dense", level=1).sort_index())
    html = summary_table(table, "acc_norm")
    headers = re.findall(r"<th[^>]*>([^<]*)</th>", html)
    assert headers[:6] == ["model", "method", "recovery", "target", "decode ×", "prefill ×"]
    assert "ppl d1/64" in headers and "ppl d2/64" in headers and "_" not in "".join(headers[:6])
    assert 'title="' in html and 'data-sort="' in html
    per_setting = re.findall(r"<th[^>]*>([^<]*)</th>", ppl_table(results))
    assert {"d1/64", "d2/64"} <= set(per_setting)


def test_snakemake_captions_are_the_plots_own():
    template = jinja2.Template((REPO / "report" / "plots.rst").read_text())
    for name, caption in plots.CAPTIONS.items():
        wildcards = type("W", (), {"name": name})
        assert template.render(snakemake=type("S", (), {"wildcards": wildcards})).strip() == caption


def test_a_second_engine_stands_beside_the_eager_one(study):
    results, windows, eager_only = study
    speed = results[results["kind"] == "speedup"]
    measured = speed["metric"].str.startswith(("measured", "pooled"))
    compiled = speed.assign(engine="compiled")
    compiled.loc[measured, ["value", "p10", "p90"]] *= 2  # the compiled engine twice the eager speed-up
    both = pd.concat([results.assign(engine=results["engine"].fillna("eager")), compiled], ignore_index=True)
    table = findings(both, windows, ("d1", 64), "acc_norm")
    key = ["model", "method", "target_ratio", "recovery"]
    merged = table.set_index(key)
    pruned = merged.index.get_level_values("method") != "dense"
    assert np.allclose(
        merged.loc[pruned, "compiled_decode_speedup"], 2 * merged.loc[pruned, "decode_speedup"]
    )
    assert (merged.loc[~pruned, "compiled_decode_speedup"] == 1.0).all()
    assert "compiled_decode_speedup" not in eager_only  # no column for an engine not measured
    assert "fastest compiled decode: " in findings_sections(table)[0]["answer"]
    assert "compiled decode ×" in findings_sections(table)[0]["table"]
    rows = summary(both, "acc_norm")
    assert np.allclose(
        rows["speedup_decode_compiled"], np.where(rows["method"] == "dense", 1, 2) * rows["speedup_decode"]
    )
    assert "compiled decode ×" in summary_table(rows, "acc_norm")
    assert "eager decode ×" in summary_table(rows, "acc_norm")
    assert "compiled decode ×" not in summary_table(summary(results, "acc_norm"), "acc_norm")
