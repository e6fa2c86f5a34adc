"""Import a model shipped as a GGUF file (rule import_gguf)."""

from prunebench.cli import main
from prunebench.study.script import logged

with logged(snakemake):  # noqa: F821 (the snakemake object is injected by Snakemake)
    sm = snakemake  # noqa: F821
    argv = ["import-gguf", "--gguf", sm.input.gguf, "--out", sm.output[0]]
    if sm.params.package:
        argv += ["--package", sm.params.package]
    raise SystemExit(main(argv))
