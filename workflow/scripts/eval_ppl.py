"""Perplexity of one model variant on every data set at every window length (rule eval_ppl)."""

from prunebench.cli import main
from prunebench.study.config import ppl_split
from prunebench.study.script import device_argv, logged

with logged(snakemake):  # noqa: F821 (the snakemake object is injected by Snakemake)
    sm = snakemake  # noqa: F821
    ppl = sm.params.ppl
    argv = ["eval", "ppl", "--model", sm.params.model]
    for name, source in ppl["datasets"].items():  # the order of the rule's outputs: data sets outermost
        argv += ["--text", source, "--split", ppl_split(ppl, name)]
    for seqlen in ppl["seqlens"]:
        argv += ["--seqlen", str(seqlen)]
    for out in sm.output:
        argv += ["--out", out]
    argv += ["--batch-size", str(ppl["batch_size"])]
    argv += device_argv(sm.params.spec)
    argv += ["--encoding", sm.params.encoding]
    if ppl["bos"]:
        argv.append("--bos")
    if ppl["max_windows"]:
        argv += ["--max-windows", str(ppl["max_windows"])]
    raise SystemExit(main(argv))
