"""Zero-shot accuracy of one model variant through lm-eval (rule eval_zeroshot)."""

from prunebench.cli import main
from prunebench.study.script import device_argv, logged

with logged(snakemake):  # noqa: F821 (the snakemake object is injected by Snakemake)
    sm = snakemake  # noqa: F821
    zs = sm.params.zeroshot
    argv = ["eval", "zeroshot", "--model", sm.params.model, "--out", sm.output[0]]
    argv += [
        "--tasks",
        ",".join(zs["tasks"]),
        "--batch-size",
        str(zs["batch_size"]),
        "--seed",
        str(sm.params.seed),
    ]
    argv += device_argv(sm.params.spec)
    if zs["include_path"]:
        argv += ["--include-path", zs["include_path"], "--offline"]
    if zs["limit"]:
        argv += ["--limit", str(zs["limit"])]
    raise SystemExit(main(argv))
