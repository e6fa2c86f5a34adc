"""Open every model, data set and lm-eval task of the study; record what was opened (rule preflight)."""

from prunebench.study.preflight import write_preflight
from prunebench.study.script import logged

with logged(snakemake):  # noqa: F821 (the snakemake object is injected by Snakemake)
    write_preflight(snakemake.params.config, snakemake.output[0])  # noqa: F821
