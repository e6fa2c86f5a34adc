rule collect:
    """One tidy table: a row per model x method x ratio x recovery x metric."""
    input:
        evals=all_eval_outputs(),
    output:
        results=report(
            "results/tables/results.csv",
            caption="../../report/results.rst",
            category="Tables",
            labels={"table": "all results"},
        ),
        parquet="results/tables/results.parquet",
        summary=report(
            "results/tables/summary.csv",
            caption="../../report/summary.rst",
            category="Tables",
            labels={"table": "summary"},
        ),
    log:
        f"{LOGS}/collect.log",
    params:
        config=config,
    threads: 1
    resources:
        gpu=0,
    conda:
        "../../envs/prunebench.yaml"
    script:
        "../scripts/collect.py"


rule plots:
    """Perplexity, accuracy and speed-up against the achieved ratio; what each method removed; costs."""
    input:
        results="results/tables/results.csv",
    output:
        plots=report(
            directory("results/plots"),
            patterns=["{name}.png"],
            caption="../../report/plots.rst",
            category="Plots",
            labels={"plot": "{name}"},
        ),
    log:
        f"{LOGS}/plots.log",
    params:
        config=config,
    threads: 1
    resources:
        gpu=0,
    conda:
        "../../envs/prunebench.yaml"
    script:
        "../scripts/plots.py"


rule report:
    """A self-contained HTML report: summary, every plot with its caption, protocol and provenance."""
    input:
        results="results/tables/results.csv",
        summary="results/tables/summary.csv",
        plots="results/plots",
        template="report/index.html.j2",
        preflight=ancient(PREFLIGHT),
    output:
        "results/report/index.html",
    log:
        f"{LOGS}/report.log",
    params:
        config=config,
    threads: 1
    resources:
        gpu=0,
    conda:
        "../../envs/prunebench.yaml"
    script:
        "../scripts/report.py"
