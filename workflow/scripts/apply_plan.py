"""Apply the plan.json written by a method that runs as a rule (rule apply_rule_plan)."""

from prunebench.cli import main
from prunebench.study.script import logged

with logged(snakemake):  # noqa: F821 (the snakemake object is injected by Snakemake)
    sm = snakemake  # noqa: F821
    argv = ["apply", "--model", sm.params.model, "--plan", sm.input.plan, "--out", sm.output[0]]
    raise SystemExit(main([*argv, "--dtype", sm.params.spec["dtype"]]))
