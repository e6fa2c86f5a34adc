"""Score a model with a method, once for every ratio (rule score)."""

from prunebench.cli import main
from prunebench.study.script import device_argv, logged, params_argv, stream_argv

with logged(snakemake):  # noqa: F821 (the snakemake object is injected by Snakemake)
    sm = snakemake  # noqa: F821
    argv = [
        "score",
        "--model",
        sm.params.model,
        "--method",
        sm.params.method,
        "--out",
        sm.output[0],
    ]
    argv += device_argv(sm.params.spec) + stream_argv(sm.params.spec, sm.params.method)
    argv += ["--encoding", sm.params.encoding]
    if sm.input.samples:
        argv += ["--samples", sm.input.samples]
    raise SystemExit(main(argv + params_argv(sm.params.method_params)))
