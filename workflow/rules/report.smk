rule collect:
    """One tidy table: a row per model x method x ratio x recovery x metric."""
    input:
        evals=all_eval_outputs(),
    output:
        results=report(
            f"{RESULTS}/tables/results.csv",
            caption="../../report/results.rst",
            category="Tables",
            labels={"table": "all results"},
        ),
        parquet=f"{RESULTS}/tables/results.parquet",
        summary=report(
            f"{RESULTS}/tables/summary.csv",
            caption="../../report/summary.rst",
            category="Tables",
            labels={"table": "summary"},
        ),
        findings=report(
            f"{RESULTS}/tables/findings.csv",
            caption="../../report/findings.rst",
            category="Tables",
            labels={"table": "findings"},
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
        results=f"{RESULTS}/tables/results.csv",
    output:
        plots=report(
            directory(f"{RESULTS}/plots"),
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
        results=f"{RESULTS}/tables/results.csv",
        summary=f"{RESULTS}/tables/summary.csv",
        findings=f"{RESULTS}/tables/findings.csv",
        plots=f"{RESULTS}/plots",
        template="report/index.html.j2",
        published="resources/published",  # the papers' numbers shown beside ours (report/published.py)
        preflight=ancient(PREFLIGHT),
    output:
        report(
            f"{RESULTS}/report/index.html",
            caption="../../report/report.rst",
            category="Report",
            labels={"report": "the study's HTML report"},
        ),
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
