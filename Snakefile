# prunebench: models x methods x sparsity ratios x recovery variants -> tables, plots, report.
from snakemake.utils import min_version

min_version("9.0")


# The default study; `--configfile config/other.yaml` replaces it instead of being merged into it.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"



report: "report/workflow.rst"


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
