# Collect every metrics JSON of this config into reports/: figures (PNG for the HTML report, SVG for papers),
# summary.csv and summary.md. Only the files listed as input are read, so results of methods or models removed
# from the config do not leak into the report.

FIGURE_CATEGORY = {
    "ppl": "Perplexity",
    "ppl_relative": "Perplexity",
    "accuracy": "Downstream accuracy",
    "speedup": "Speed",
    "prune_cost": "Pruning cost",
}


rule report:
    input:
        metric_files(),
    output:
        **{
            name: report(f"{REPORTS}/{name}.png", caption=f"../report/{name}.rst", category=FIGURE_CATEGORY[name])
            for name in report_figures()
        },
        **{f"{name}_svg": f"{REPORTS}/{name}.svg" for name in report_figures()},
        csv=report(f"{REPORTS}/summary.csv", caption="../report/summary.rst", category="Tables"),
        md=f"{REPORTS}/summary.md",
    params:
        code=code_version("report"),
        reports=lambda wildcards, output: os.path.dirname(output.csv),
    log:
        f"{RESULTS}/logs/report.log",
    threads: threads_of("report")
    resources:
        **resources_of("report"),
    conda:
        "../../envs/core.yaml"
    shell:
        "wandapp report --results {input:q} --output {params.reports:q} > {log:q} 2>&1"
