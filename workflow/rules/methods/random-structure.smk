# A method that runs as a rule (the worked example of the "kind: rule" contract).
#
# Contract: a rule that turns the base model (and, if it wants them, the shared calibration samples)
# into results/<study>/{model}/<name>/r{ratio}/plan.json in the plan format of docs/plan-format.md, one per
# ratio (and, to show in the cost plot, its Snakemake benchmark file in
# {BENCH}/plan/{model}/<name>/r{ratio}.tsv). The rule may run in its own conda environment; nothing downstream knows it is not a library
# method. Its options come from config.yaml's methods.<name>.params.


rule random_structure_plan:
    """Random KV groups and MLP channels, the same fraction removed in every layer (a sanity baseline)."""
    input:
        model=base_model_files,
    output:
        RESULTS + "/{model}/random-structure/r{ratio}/plan.json",
    log:
        f"{LOGS}/methods/random-structure/{{model}}/r{{ratio}}.log",
    benchmark:
        f"{BENCH}/plan/{{model}}/random-structure/r{{ratio}}.tsv"
    params:
        model=base_model,
        ratio=ratio_value,
        seed=config["methods"]["random-structure"].get("params", {}).get("seed", config["seed"]),
    threads: 1
    resources:
        gpu=0,
    conda:
        "../../../envs/random-structure.yaml"
    script:
        "../../scripts/methods/random_structure.py"
