"""Render the self-contained HTML report (rule report)."""

from prunebench.report.html import render_report
from prunebench.study.script import logged

with logged(snakemake):  # noqa: F821 (the snakemake object is injected by Snakemake)
    sm = snakemake  # noqa: F821
    render_report(
        sm.params.config,
        sm.input.summary,
        sm.input.plots,
        sm.input.template,
        sm.output[0],
        results_csv=sm.input.results,
        findings_csv=sm.input.findings,
        preflight=sm.input.preflight,
    )
