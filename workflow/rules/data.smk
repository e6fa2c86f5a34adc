rule calibration:
    """Shared calibration samples: the same token windows for every method (calibration: shared)."""
    input:
        model=base_model_files,
    output:
        "results/{model}/calibration/shared.safetensors",
    log:
        f"{LOGS}/calibration/{{model}}.log",
    params:
        model=base_model,
        source=config["calibration"]["source"],
        nsamples=config["calibration"]["nsamples"],
        seqlen=config["calibration"]["seqlen"],
        seed=config["seed"],
    threads: 1
    resources:
        gpu=0,
    conda:
        "../../envs/prunebench.yaml"
    script:
        "../scripts/calibration.py"
