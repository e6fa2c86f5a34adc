"""The HTML report in a real browser (headless Chromium from Debian): it renders, its images load, a
click sorts a column both ways, and the page logs no error."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import yaml
from report_fixtures import MODELS, RATIOS, RECOVERIES, config, synthetic

from prunebench.report import plots
from prunebench.report.findings import findings
from prunebench.report.html import render_report
from prunebench.report.styles import method_styles
from prunebench.report.tables import summary
from prunebench.study import validate_config

REPO = Path(__file__).resolve().parents[1]

# Runs first in the page: records every uncaught error and console.error.
RECORD_ERRORS = """<script>
window.__errors = [];
window.addEventListener("error", (e) => window.__errors.push(String(e.message)));
const __consoleError = console.error;
console.error = (...args) => { window.__errors.push(args.join(" ")); __consoleError(...args); };
</script>"""
# Runs last: clicks the summary's first perplexity header twice and writes what it saw into the page.
CLICK_AND_REPORT = """<script>
window.addEventListener("load", () => {
  const table = document.querySelector("table.summary");
  const headers = Array.from(table.tHead.rows[0].cells);
  const column = headers.findIndex((th) => th.textContent.startsWith("ppl d1/64"));
  const read = () => Array.from(table.tBodies[0].rows).map((r) => r.cells[column].dataset.sort);
  const before = read();
  headers[column].click();
  const ascending = read();
  headers[column].click();
  const descending = read();
  const images = Array.from(document.images);
  document.body.setAttribute("data-test", JSON.stringify({
    errors: window.__errors, before, ascending, descending, sortState: headers[column].getAttribute("aria-sort"),
    findings: document.querySelectorAll("table.findings").length,
    images: images.length, loaded: images.filter((i) => i.complete && i.naturalWidth > 0).length,
  }));
});
</script>"""


def chromium() -> str | None:
    """Chromium, installed from Debian (apt-get, as root) where missing; None where that cannot be."""
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    if shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, timeout=1200, env=env
        )
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def browser() -> str:
    path = chromium()
    if path is None:
        pytest.skip("no headless Chromium: not installed, and apt-get install chromium needs Debian and root")
    return path


def _report(tmp_path: Path) -> Path:
    results, windows = synthetic()
    tables = tmp_path / "tables"
    tables.mkdir()
    results.to_csv(tables / "results.csv", index=False)
    summary(results, "acc_norm").to_csv(tables / "summary.csv", index=False)
    findings(results, windows, ("d1", 64), "acc_norm").to_csv(tables / "findings.csv", index=False)
    plot_dir = tmp_path / "plots"
    plot_dir.mkdir()
    styles = method_styles(config())
    for name, fig in (("ppl_vs_ratio", plots.ppl_vs_ratio(results, styles)),
                      ("accuracy_vs_ratio", plots.accuracy_vs_ratio(results, "acc_norm", styles))):  # fmt: skip
        fig.savefig(plot_dir / f"{name}.png", dpi=60)
        plt.close(fig)
    study = validate_config(yaml.safe_load((REPO / "config" / "tiny.yaml").read_text()), files=False)
    out = tmp_path / "report" / "index.html"
    render_report(study, str(tables / "summary.csv"), str(plot_dir), str(REPO / "report" / "index.html.j2"),
                  str(out), results_csv=str(tables / "results.csv"), findings_csv=str(tables / "findings.csv"))  # fmt: skip
    return out


def test_the_report_renders_sorts_and_logs_no_error_in_chromium(tmp_path, browser, monkeypatch):
    monkeypatch.chdir(REPO)
    report = _report(tmp_path)
    page = report.read_text()
    assert "<script" in page and "http" not in re.sub(r'(xmlns|href)="[^"]*"', "", page).split("<script>")[-1]
    probe = tmp_path / "probe.html"
    probe.write_text(
        page.replace("<head>", "<head>" + RECORD_ERRORS, 1).replace("</body>", CLICK_AND_REPORT + "</body>")
    )
    run = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom",
         probe.as_uri()],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    found = re.search(r'data-test="([^"]*)"', run.stdout)
    assert found, f"the page did not run its test script: {run.stderr[-2000:]}"
    seen = json.loads(html.unescape(found.group(1)))
    assert seen["errors"] == []
    assert seen["findings"] == len(MODELS) * len(RATIOS) * len(RECOVERIES)
    assert seen["images"] == seen["loaded"] == 2
    values = [float(v) for v in seen["ascending"]]
    assert values == sorted(values) and values != [float(v) for v in seen["before"]]
    assert [float(v) for v in seen["descending"]] == sorted(values, reverse=True)
    assert seen["sortState"] == "descending"
