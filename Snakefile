# prunebench: models x methods x sparsity ratios x recovery variants -> tables, plots, report.
from snakemake.utils import min_version

min_version("9.0")


report: "report/workflow.rst"


# The config (config.yaml unless --configfile names another), read strictly and validated.
include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/prune.smk"
include: "workflow/rules/recover.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"

for _module in rule_method_modules():

    include: _module


rule all:
    input:
        final_outputs(),
    default_target: True
