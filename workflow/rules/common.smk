# Everything that is not a rule: config loading and validation, the grid, wildcard constraints, input
# functions.
import re
import sys
from pathlib import Path

from prunebench.errors import PrunebenchError
from prunebench.methods import get_method
from prunebench.revisions import export as export_revisions
from prunebench.study import validate_config, variants
from prunebench.study.checks import check_devices
from prunebench.study.cluster import Request, check_cluster
from prunebench.study.grid import DENSE, ratio_of, ratio_tag, study_root
from prunebench.recovery.variants import get_variant
from prunebench.study.loading import check_study_files
from prunebench.study.sizing import (
    memory_mb,
    parameter_count,
    prune_runtime_min,
    recovery_runtime_min,
    recovery_tokens,
    runtime_min,
)

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
# The study's Hub revisions, for every job's loaders (each job reads this file again).
export_revisions(config)


# Devices are checked where the jobs run: here, unless an executor sends them elsewhere (Slurm: there
# every job's request is checked against the cluster's nodes first, so that none waits PENDING for
# ever). A dry run runs no hooks; a job given a device it lacks stops before loading anything.
onstart:
    try:
        if workflow.local_exec:
            check_devices(config)
        elif workflow.executor_plugin.cli_prefix == "slurm":
            check_cluster(slurm_requests())
    except PrunebenchError as exc:
        sys.exit(f"prunebench: error: {exc}")


def slurm_requests():
    """What each job about to run asks of Slurm (CPUs, memory, GPUs, time, partition)."""
    requests = []
    for job in workflow.dag.needrun_jobs():
        if job.is_local:
            continue
        res = job.resources
        requests.append(
            Request(
                f"{job.rule.name} ({', '.join(f'{k}={v}' for k, v in job.wildcards_dict.items())})",
                int(res.get("cpus_per_task", 0) or job.threads),
                int(res.get("mem_mb", 0) or 0),
                int(res.get("gpu", 0) or 0),
                int(res.get("runtime", 0) or 0) or None,
                res.get("slurm_partition") or None,
            )
        )
    return requests


MODELS = list(config["models"])
METHODS = list(config["methods"])
LIBRARY_METHODS = [m for m, s in config["methods"].items() if s["kind"] == "library"]
RULE_METHODS = [m for m, s in config["methods"].items() if s["kind"] == "rule"]
RECOVERIES = list(config["recovery"])
RATIOS = [ratio_tag(r) for r in config["ratios"]]
EVAL = config["evaluation"]
VARIANTS = variants(config)
# Every output of the study lies under results/<study>/, so several studies coexist.
RESULTS = study_root(config)
# (data set, window) of every perplexity result, data sets outermost (the order of eval_ppl's outputs).
PPL_PAIRS = [(dataset, seqlen) for dataset in EVAL["ppl"]["datasets"] for seqlen in EVAL["ppl"]["seqlens"]]
LOGS = f"{RESULTS}/logs"
VARIANT_LABELS = {"model": "{model}", "method": "{method}", "ratio": "{ratio}", "recovery": "{recovery}"}
BENCH = f"{RESULTS}/benchmarks"


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


def rule_method_modules():
    """Rule modules of methods declared with kind: rule (workflow/rules/methods/<name>.smk)."""
    return [f"workflow/rules/methods/{name}.smk" for name in RULE_METHODS]


def model_spec(wildcards):
    return config["models"][wildcards.model]


def base_model(wildcards):
    """The base model's path or Hub id (a parameter: a Hub id is no file for Snakemake to track)."""
    return config["models"][wildcards.model]["path"]


# Written by rule preflight, which every job that opens a base model waits for. ancient(): a preflight
# run again (the file is newer) does not make the study's results out of date.
PREFLIGHT = f"{RESULTS}/preflight.json"


def base_model_files(wildcards):
    """The base model as a tracked input when it is a local directory (or imported), and the preflight."""
    path = base_model(wildcards)
    local = [path] if "gguf" in model_spec(wildcards) or Path(path).exists() else []
    return [*local, ancient(PREFLIGHT)]


def gguf_source(wildcards):
    return model_spec(wildcards)["gguf"]["source"]


def gguf_package(wildcards):
    return model_spec(wildcards)["gguf"].get("package", "")


def variant_model(wildcards):
    """The checkpoint a variant evaluates: the base model itself for the dense row."""
    if wildcards.method == DENSE:
        return base_model(wildcards)
    return f"{RESULTS}/{wildcards.model}/{wildcards.method}/r{wildcards.ratio}/{wildcards.recovery}/model"


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


def recovery_gpus(wildcards):
    """GPUs of a recover job: the variant's ``gpus`` (one data-parallel process each), else the model's
    (a model split over its GPUs); none for a CPU model."""
    variant = recovery_spec(wildcards)["gpus"]
    return (variant if variant > 1 else gpu_count(wildcards)) if gpu_count(wildcards) else 0


def sized_mem_mb(rule):
    """Host memory (MB) of a job of ``rule``, from its model's size and dtype (prunebench.study.sizing)."""

    def mem_mb(wildcards):
        spec = model_spec(wildcards)
        full = rule == "recover" and "cpt" in get_variant(wildcards.trained).phases
        return memory_mb(rule, parameter_count(spec), spec["dtype"], full)

    return mem_mb


def sized_runtime(rule):
    """Wall time (minutes) of a job of ``rule``, from its model's size (and recovery's tokens)."""

    def runtime(wildcards):
        parameters = parameter_count(model_spec(wildcards))
        if rule == "recover":
            spec = recovery_spec(wildcards)
            full = "cpt" in get_variant(wildcards.trained).phases
            return recovery_runtime_min(parameters, recovery_tokens(spec), full, spec["gpus"])
        if rule == "prune":
            method = get_method(registered_method(wildcards.library_method))
            tokens = method.ratio_step_tokens(method.config(library_method_params(wildcards)))
            return prune_runtime_min(parameters, tokens)
        return runtime_min(rule, parameters, len(PPL_PAIRS) if rule == "eval_ppl" else 1)

    return runtime


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
        return f"{RESULTS}/{wildcards.model}/calibration/shared.safetensors"
    return []


def prune_scores(wildcards):
    """The method's scores, except at ratio 0, which removes nothing and needs none."""
    if ratio_value(wildcards) == 0:
        return []
    return f"{RESULTS}/{wildcards.model}/{wildcards.library_method}/scores"


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
            return f"{RESULTS}/{wildcards.model}/{wildcards.method}/scores"
    return []


def eval_outputs(variant):
    out = [f"{variant.directory}/eval/ppl_{dataset}_{seqlen}.json" for dataset, seqlen in PPL_PAIRS]
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
        f"{RESULTS}/{model}/{method}/r{ratio}/none/model/plan.json"
        for model in MODELS
        for method in METHODS
        for ratio in RATIOS
    ]


def final_outputs():
    return [f"{RESULTS}/tables/results.csv", f"{RESULTS}/tables/summary.csv", f"{RESULTS}/report/index.html"]
