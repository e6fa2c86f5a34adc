"""Perplexity of one model variant on one data set and window length (rule eval_ppl)."""

from prunebench.cli import main
from prunebench.study.script import device_argv, logged

with logged(snakemake):  # noqa: F821 (the snakemake object is injected by Snakemake)
    sm = snakemake  # noqa: F821
    ppl = sm.params.ppl
    argv = ["eval", "ppl", "--model", sm.params.model, "--out", sm.output[0]]
    argv += ["--text", ppl["datasets"][sm.wildcards.dataset], "--split", ppl["split"]]
    argv += ["--seqlen", sm.wildcards.seqlen, "--batch-size", str(ppl["batch_size"])]
    argv += device_argv(sm.params.spec)
    argv += ["--encoding", sm.params.encoding]
    if ppl["bos"]:
        argv.append("--bos")
    if ppl["max_windows"]:
        argv += ["--max-windows", str(ppl["max_windows"])]
    raise SystemExit(main(argv))
