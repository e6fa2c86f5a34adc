rule eval_ppl:
    """Perplexity on every data set at every window length, the model loaded once; one JSON each, so
    that each result stays its own file for the tables and the report."""
    input:
        model=variant_model_files,
    output:
        [
            report(
                RESULTS + f"/{{model}}/{{method}}/r{{ratio}}/{{recovery}}/eval/ppl_{dataset}_{seqlen}.json",
                caption="../../report/eval_ppl.rst",
                category="Perplexity",
                labels={**VARIANT_LABELS, "data set": dataset, "window": str(seqlen)},
            )
            for dataset, seqlen in PPL_PAIRS
        ],
    log:
        f"{LOGS}/eval_ppl/{{model}}/{{method}}/r{{ratio}}/{{recovery}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{model}}/{{method}}/r{{ratio}}/{{recovery}}/ppl.tsv"
    params:
        model=variant_model,
        ppl=EVAL["ppl"],
        spec=model_spec,
        encoding=config["text_encoding"],
    threads: 1
    resources:
        mem_mb=sized_mem_mb("eval_ppl"),
        runtime=sized_runtime("eval_ppl"),
        gpu=gpu_count,
    conda:
        "../../envs/prunebench.yaml"
    script:
        "../scripts/eval_ppl.py"


rule eval_zeroshot:
    """Zero-shot accuracy through lm-eval (acc and acc_norm), lm-eval's full results kept."""
    input:
        model=variant_model_files,
    output:
        report(
            RESULTS + "/{model}/{method}/r{ratio}/{recovery}/eval/zeroshot.json",
            caption="../../report/eval_zeroshot.rst",
            category="Zero-shot accuracy",
            labels=VARIANT_LABELS,
        ),
    log:
        f"{LOGS}/eval_zeroshot/{{model}}/{{method}}/r{{ratio}}/{{recovery}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{model}}/{{method}}/r{{ratio}}/{{recovery}}/zeroshot.tsv"
    params:
        model=variant_model,
        zeroshot=EVAL["zeroshot"],
        spec=model_spec,
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=sized_mem_mb("eval_zeroshot"),
        runtime=sized_runtime("eval_zeroshot"),
        gpu=gpu_count,
    conda:
        "../../envs/prunebench.yaml"
    script:
        "../scripts/eval_zeroshot.py"


rule eval_latency:
    """Measured prefill and decode latency, side by side with the dense model in the same process.

    It asks for more threads than any machine has; Snakemake scales that down to --cores, so the job
    runs alone and nothing disturbs the timings (on a GPU: gpu=1, run with --resources gpu=1 so that
    no other GPU job shares the device; the Slurm profile sets its own thread count).
    """
    input:
        model=variant_model_files,
        base=base_model_files,
    output:
        report(
            RESULTS + "/{model}/{method}/r{ratio}/{recovery}/eval/latency.json",
            caption="../../report/eval_latency.rst",
            category="Latency",
            labels=VARIANT_LABELS,
        ),
    log:
        f"{LOGS}/eval_latency/{{model}}/{{method}}/r{{ratio}}/{{recovery}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{model}}/{{method}}/r{{ratio}}/{{recovery}}/latency.tsv"
    params:
        base=base_model,
        model=variant_model,
        latency=EVAL["latency"],
        spec=model_spec,
    threads: 1024
    resources:
        mem_mb=sized_mem_mb("eval_latency"),
        runtime=sized_runtime("eval_latency"),
        gpu=one_gpu,
    conda:
        "../../envs/prunebench.yaml"
    script:
        "../scripts/eval_latency.py"
