# wandapp workflow: convert -> calibrate -> prune (-> lora) -> eval_ppl, eval_tasks, bench -> report.
# Run from the repository root: `snakemake --cores 2` (profiles/default is loaded automatically).
# Another config: `snakemake --configfile workflow/configs/paper.yaml` (it replaces config.yaml, not merges).

from snakemake.utils import min_version

min_version("9.27")


# config.yaml is the default; a --configfile replaces it rather than being merged into it (merging would mix
# the default's models and methods into, e.g., the paper config).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "workflow/rules/common.smk"


report: "workflow/report/workflow.rst"


include: "workflow/rules/convert.smk"
include: "workflow/rules/calibrate.smk"
include: "workflow/rules/prune.smk"
include: "workflow/rules/lora.smk"
include: "workflow/rules/eval_ppl.smk"
include: "workflow/rules/eval_tasks.smk"
include: "workflow/rules/bench.smk"
include: "workflow/rules/report.smk"


localrules:
    all,
    report,


rule all:
    default_target: True
    input:
        rules.report.output,
