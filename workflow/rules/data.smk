rule import_gguf:
    """A model shipped as a GGUF file, imported once as a float32 Hugging Face checkpoint."""
    input:
        gguf=gguf_source,
    output:
        directory(RESULTS + "/{model}/imported"),
    log:
        f"{LOGS}/import_gguf/{{model}}.log",
    params:
        package=gguf_package,
    threads: 1
    resources:
        gpu=0,
    conda:
        "../../envs/prunebench.yaml"
    script:
        "../scripts/import_gguf.py"


rule calibration:
    """Shared calibration samples: the same token windows for every method (calibration: shared)."""
    input:
        model=base_model_files,
    output:
        RESULTS + "/{model}/calibration/shared.safetensors",
    log:
        f"{LOGS}/calibration/{{model}}.log",
    params:
        model=base_model,
        source=config["calibration"]["source"],
        nsamples=config["calibration"]["nsamples"],
        seqlen=config["calibration"]["seqlen"],
        seed=config["seed"],
        encoding=config["text_encoding"],
    threads: 1
    resources:
        gpu=0,
    conda:
        "../../envs/prunebench.yaml"
    script:
        "../scripts/calibration.py"


rule preflight:
    """Open every model, Hub data set and lm-eval task the study names, in seconds, before any job."""
    output:
        PREFLIGHT,
    log:
        f"{LOGS}/preflight.log",
    params:
        config=config,
    threads: 1
    resources:
        gpu=0,
    conda:
        "../../envs/prunebench.yaml"
    script:
        "../scripts/preflight.py"
