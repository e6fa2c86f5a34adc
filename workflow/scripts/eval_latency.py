"""Measured latency of one model variant, interleaved with the dense model (rule eval_latency)."""

from prunebench.cli import main
from prunebench.study.script import logged

with logged(snakemake):  # noqa: F821 (the snakemake object is injected by Snakemake)
    sm = snakemake  # noqa: F821
    lat = sm.params.latency
    argv = ["eval", "latency", "--model", sm.params.model, "--out", sm.output[0]]
    argv += ["--batch-sizes", ",".join(map(str, lat["batch_sizes"]))]
    argv += ["--prompt-lengths", ",".join(map(str, lat["prompt_lengths"]))]
    argv += ["--new-tokens", str(lat["new_tokens"]), "--min-repeats", str(lat["min_repeats"])]
    argv += ["--min-seconds", str(lat["min_seconds"]), "--dtype", sm.params.spec["dtype"]]
    argv += ["--device", sm.params.spec["device"]]
    argv += ["--engine", ",".join(lat["engine"])]
    if sm.params.model != sm.params.base:
        argv += ["--base-model", sm.params.base]
    raise SystemExit(main(argv))
