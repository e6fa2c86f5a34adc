"""Draw the study's plots from the tidy table (rule plots)."""

import pandas as pd

from prunebench.report.plots import draw_all
from prunebench.study.script import logged

with logged(snakemake):  # noqa: F821 (the snakemake object is injected by Snakemake)
    sm = snakemake  # noqa: F821
    print("plots:", draw_all(pd.read_csv(sm.input.results), sm.params.config, sm.output.plots))
