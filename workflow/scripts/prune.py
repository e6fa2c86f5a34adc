"""Prune to one ratio from saved scores and write the physically smaller model (rule prune)."""

from prunebench.cli import main
from prunebench.study.script import device_argv, logged, params_argv, stream_argv

with logged(snakemake):  # noqa: F821 (the snakemake object is injected by Snakemake)
    sm = snakemake  # noqa: F821
    argv = ["prune", "--model", sm.params.model, "--method", sm.params.method]
    argv += ["--ratio", repr(sm.params.ratio), "--out", sm.output[0]]
    if sm.input.scores:  # none at ratio 0
        argv += ["--scores", sm.input.scores]
    argv += device_argv(sm.params.spec)
    if sm.input.scores:  # a streamed prune selects from saved scores
        argv += stream_argv(sm.params.spec, sm.params.method, "prune")
    raise SystemExit(main(argv + params_argv(sm.params.method_params)))
