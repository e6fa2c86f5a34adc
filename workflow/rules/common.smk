# Everything that is not a rule: config loading and validation, the grid, wildcard constraints, input
# functions.
import re
import sys
from pathlib import Path

from prunebench.errors import PrunebenchError
from prunebench.methods import get_method
from prunebench.study import validate_config, variants
from prunebench.study.checks import check_devices
from prunebench.study.grid import DENSE, ratio_of, ratio_tag
from prunebench.study.loading import check_study_files

# The default study; `--configfile config/other.yaml` replaces it instead of being merged into it.
# Snakemake reads config files itself: it keeps the last of two equal keys and reports a syntax
# error without its line, so each file is read again strictly (the default one before Snakemake).
try:
    if not workflow.overwrite_configfiles:
        check_study_files(["config.yaml"])

        configfile: "config.yaml"

    check_study_files(workflow.configfiles)
    # Files, models and lm-eval tasks are checked once, by the main process (not again in each
    # cluster job, which re-reads this file).
    config.update(validate_config(config, files=workflow.is_main_process))
except PrunebenchError as exc:
    sys.exit(f"prunebench: error: {exc}")


# Devices are checked where the jobs run: here, unless an executor sends them elsewhere (Slurm). A
# dry run runs no hooks; a job given a device it lacks stops before loading anything.
onstart:
    if workflow.local_exec:
        try:
            check_devices(config)
        except PrunebenchError as exc:
            sys.exit(f"prunebench: error: {exc}")


MODELS = list(config["models"])
METHODS = list(config["methods"])
LIBRARY_METHODS = [m for m, s in config["methods"].items() if s["kind"] == "library"]
RULE_METHODS = [m for m, s in config["methods"].items() if s["kind"] == "rule"]
RECOVERIES = list(config["recovery"])
RATIOS = [ratio_tag(r) for r in config["ratios"]]
EVAL = config["evaluation"]
VARIANTS = variants(config)
LOGS = "results/logs"
VARIANT_LABELS = {"model": "{model}", "method": "{method}", "ratio": "{ratio}", "recovery": "{recovery}"}
BENCH = "results/benchmarks"


def _alternatives(names):
    return "|".join(re.escape(n) for n in names) or "(?!)"


wildcard_constraints:
    model=_alternatives(MODELS),
    method=_alternatives(METHODS + [DENSE]),
    library_method=_alternatives(LIBRARY_METHODS),
    rule_method=_alternatives(RULE_METHODS),
    ratio=_alternatives(RATIOS + [ratio_tag(0.0)]),
    recovery=_alternatives(RECOVERIES),
    trained=_alternatives([r for r in RECOVERIES if r != "none"]),
    dataset=_alternatives(EVAL["ppl"]["datasets"]),
    seqlen=r"\d+",


def rule_method_modules():
    """Rule modules of methods declared with kind: rule (workflow/rules/methods/<name>.smk)."""
    return [f"workflow/rules/methods/{name}.smk" for name in RULE_METHODS]


def model_spec(wildcards):
    return config["models"][wildcards.model]


def base_model(wildcards):
    """The base model's path or Hub id (a parameter: a Hub id is no file for Snakemake to track)."""
    return config["models"][wildcards.model]["path"]


def base_model_files(wildcards):
    """The base model as a tracked input when it is a local directory (or imported), else nothing."""
    path = base_model(wildcards)
    return [path] if "gguf" in model_spec(wildcards) or Path(path).exists() else []


def gguf_source(wildcards):
    return model_spec(wildcards)["gguf"]["source"]


def gguf_package(wildcards):
    return model_spec(wildcards)["gguf"].get("package", "")


def variant_model(wildcards):
    """The checkpoint a variant evaluates: the base model itself for the dense row."""
    if wildcards.method == DENSE:
        return base_model(wildcards)
    return f"results/{wildcards.model}/{wildcards.method}/r{wildcards.ratio}/{wildcards.recovery}/model"


def variant_model_files(wildcards):
    return base_model_files(wildcards) if wildcards.method == DENSE else [variant_model(wildcards)]


def ratio_value(wildcards):
    """The configured ratio a job prunes to (the path's tag only names it)."""
    return ratio_of(config, wildcards.ratio)


def gpu_count(wildcards):
    """GPUs a job on this model requests (Snakemake's resource ``gpu``, which Slurm gets too)."""
    spec = model_spec(wildcards)
    return spec["gpus"] if spec["device"].startswith("cuda") else 0


def one_gpu(wildcards):
    """GPUs of a job that times the model on one device (latency): 1 on CUDA, whatever ``gpus`` says."""
    return min(gpu_count(wildcards), 1)


def registered_method(name):
    """The registry name a config entry runs (its ``method:``, default its key)."""
    return config["methods"][name].get("method", name)


def library_method_name(wildcards):
    return registered_method(wildcards.library_method)


def shared_calibration(wildcards):
    """The shared samples, for a library method that calibrates (a data-free one needs none)."""
    method = getattr(wildcards, "library_method", None)
    if method is not None and not get_method(registered_method(method)).uses_calibration:
        return []
    if config["calibration"]["mode"] == "shared":
        return f"results/{wildcards.model}/calibration/shared.safetensors"
    return []


def prune_scores(wildcards):
    """The method's scores, except at ratio 0, which removes nothing and needs none."""
    if ratio_value(wildcards) == 0:
        return []
    return f"results/{wildcards.model}/{wildcards.library_method}/scores"


def library_method_params(wildcards):
    return config["methods"][wildcards.library_method].get("params", {})


def rule_method_params(wildcards):
    return config["methods"][wildcards.rule_method].get("params", {})


def recovery_spec(wildcards):
    return config["recovery"][wildcards.trained]


def recovery_scores(wildcards):
    """cfsp_lora reuses CFSP's coarse layer importances when CFSP pruned the model."""
    if wildcards.trained == "cfsp_lora" and wildcards.method in LIBRARY_METHODS:
        if registered_method(wildcards.method) == "cfsp":
            return f"results/{wildcards.model}/{wildcards.method}/scores"
    return []


def eval_outputs(variant):
    out = [
        f"{variant.directory}/eval/ppl_{dataset}_{seqlen}.json"
        for dataset in EVAL["ppl"]["datasets"]
        for seqlen in EVAL["ppl"]["seqlens"]
    ]
    if EVAL["zeroshot"]["tasks"]:
        out.append(f"{variant.directory}/eval/zeroshot.json")
    # Recovery changes weights, not shapes (LoRA is merged): latency is measured once per pruned shape.
    if EVAL["latency"]["enabled"] and variant.recovery == "none":
        out.append(f"{variant.directory}/eval/latency.json")
    return out


def all_eval_outputs():
    return [path for variant in VARIANTS for path in eval_outputs(variant)]


def all_plans():
    return [
        f"results/{model}/{method}/r{ratio}/none/model/plan.json"
        for model in MODELS
        for method in METHODS
        for ratio in RATIOS
    ]


def final_outputs():
    return ["results/tables/results.csv", "results/tables/summary.csv", "results/report/index.html"]
