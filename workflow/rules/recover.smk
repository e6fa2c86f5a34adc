rule recover:
    """Recover a pruned model under the study's budget (identical for every method); LoRA is merged."""
    input:
        model=RESULTS + "/{model}/{method}/r{ratio}/none/model",
        scores=recovery_scores,
    output:
        directory(RESULTS + "/{model}/{method}/r{ratio}/{trained}/model"),
    log:
        f"{LOGS}/recover/{{model}}/{{method}}/r{{ratio}}/{{trained}}.log",
    benchmark:
        f"{BENCH}/recover/{{model}}/{{method}}/r{{ratio}}/{{trained}}.tsv"
    params:
        # Outside the output directory, which Snakemake deletes before a job reruns: an interrupted
        # recovery resumes from its last checkpoint.
        checkpoint_dir=RESULTS + "/{model}/{method}/r{ratio}/{trained}/resume",
        recovery=recovery_spec,
        spec=model_spec,
        seed=config["seed"],
        encoding=config["text_encoding"],
    threads: 1
    resources:
        mem_mb=sized_mem_mb("recover"),
        runtime=sized_runtime("recover"),
        gpu=recovery_gpus,
    conda:
        "../../envs/prunebench.yaml"
    script:
        "../scripts/recover.py"
