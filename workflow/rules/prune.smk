rule score:
    """The expensive, ratio-independent part of a method: computed once, reused for every ratio."""
    input:
        model=base_model_files,
        samples=shared_calibration,
    output:
        directory(RESULTS + "/{model}/{library_method}/scores"),
    log:
        f"{LOGS}/score/{{model}}/{{library_method}}.log",
    benchmark:
        f"{BENCH}/score/{{model}}/{{library_method}}.tsv"
    params:
        model=base_model,
        method=library_method_name,
        method_params=library_method_params,
        spec=model_spec,
        encoding=config["text_encoding"],
    threads: 1
    resources:
        mem_mb=sized_mem_mb("score"),
        runtime=sized_runtime("score"),
        gpu=gpu_count,
    conda:
        "../../envs/prunebench.yaml"
    script:
        "../scripts/score.py"


rule prune:
    """Select the plan for one ratio from the saved scores and write the physically pruned model."""
    input:
        model=base_model_files,
        scores=prune_scores,
    output:
        directory(RESULTS + "/{model}/{library_method}/r{ratio}/none/model"),
    log:
        f"{LOGS}/prune/{{model}}/{{library_method}}/r{{ratio}}.log",
    benchmark:
        f"{BENCH}/prune/{{model}}/{{library_method}}/r{{ratio}}.tsv"
    params:
        model=base_model,
        method=library_method_name,
        ratio=ratio_value,
        method_params=library_method_params,
        spec=model_spec,
    threads: 1
    resources:
        mem_mb=sized_mem_mb("prune"),
        runtime=sized_runtime("prune"),
        gpu=gpu_count,
    conda:
        "../../envs/prunebench.yaml"
    script:
        "../scripts/prune.py"


rule apply_rule_plan:
    """A method run as a rule writes plan.json; from here on it is treated like any library method."""
    input:
        model=base_model_files,
        plan=RESULTS + "/{model}/{rule_method}/r{ratio}/plan.json",
    output:
        directory(RESULTS + "/{model}/{rule_method}/r{ratio}/none/model"),
    log:
        f"{LOGS}/apply/{{model}}/{{rule_method}}/r{{ratio}}.log",
    benchmark:
        f"{BENCH}/prune/{{model}}/{{rule_method}}/r{{ratio}}.tsv"
    params:
        model=base_model,
        spec=model_spec,
    threads: 1
    resources:
        mem_mb=sized_mem_mb("apply_rule_plan"),
        runtime=sized_runtime("apply_rule_plan"),
        gpu=0,
    conda:
        "../../envs/prunebench.yaml"
    script:
        "../scripts/apply_plan.py"
