"""Recover a pruned model under the study's budget (rule recover); data-parallel over the job's GPUs."""

import subprocess
import sys

from prunebench.cli import main
from prunebench.recovery.parallel import torchrun_argv
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
    argv += device_argv(sm.params.spec)
    if spec["gpus"] > 1:  # one process per GPU of the variant (torchrun), rank 0 writes the model
        sys.stdout.flush()
        run = subprocess.run(
            torchrun_argv(sm.resources.gpu, [*argv, "--no-progress"]), stdout=sys.stdout, stderr=sys.stderr
        )
        raise SystemExit(run.returncode)
    raise SystemExit(main(argv))
