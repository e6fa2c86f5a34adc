"""Recover a pruned model under the study's budget (rule recover)."""

from prunebench.cli import main
from prunebench.study.script import device_argv, logged, params_argv

with logged(snakemake):  # noqa: F821 (the snakemake object is injected by Snakemake)
    sm = snakemake  # noqa: F821
    spec = sm.params.recovery
    argv = ["recover", "--model", sm.input.model, "--variant", sm.wildcards.trained, "--out", sm.output[0]]
    argv += [
        "--data",
        spec["data"],
        "--seed",
        str(sm.params.seed),
        "--checkpoint-dir",
        sm.params.checkpoint_dir,
    ]
    argv += ["--batch-size", str(spec["batch_size"]), "--seqlen", str(spec["seqlen"])]
    if "tokens" in spec:
        argv += ["--tokens", str(spec["tokens"])]
    else:
        argv += ["--steps", str(spec["steps"])]
    if "lr" in spec:
        argv += ["--lr", str(spec["lr"])]
    if sm.input.scores:
        argv += ["--scores", sm.input.scores]
    argv += [*params_argv(spec["params"]), "--encoding", sm.params.encoding]
    raise SystemExit(main([*argv, *device_argv(sm.params.spec)]))
