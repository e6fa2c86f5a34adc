"""Collect every result file into the tidy table and the summary (rule collect)."""

from prunebench.report.tables import write_tables
from prunebench.study.script import logged

with logged(snakemake):  # noqa: F821 (the snakemake object is injected by Snakemake)
    sm = snakemake  # noqa: F821
    frame = write_tables(
        sm.params.config, sm.output.results, sm.output.parquet, sm.output.summary, sm.output.findings
    )
    print(f"{len(frame)} rows")
