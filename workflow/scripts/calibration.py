"""Shared calibration samples for one model (rule calibration)."""

from prunebench.steps import make_calibration
from prunebench.study.script import logged

with logged(snakemake):  # noqa: F821 (the snakemake object is injected by Snakemake)
    p = snakemake.params  # noqa: F821
    out = snakemake.output[0]  # noqa: F821
    make_calibration(p.model, p.source, p.nsamples, p.seqlen, p.seed, out=out, encoding=p.encoding)
