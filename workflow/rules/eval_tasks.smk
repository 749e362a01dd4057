# Zero-shot accuracy with lm-eval on the configured tasks (local mirror when data_dir is set).


rule eval_tasks:
    input:
        model=model_dir,
    output:
        f"{RESULTS}/metrics/{{model}}/{{method}}/{{variant}}/tasks.json",
    params:
        tasks=",".join(config["eval"]["tasks"]["names"]),
        limit=optional_flag("--limit", config["eval"]["tasks"]["limit"]),
        batch_size=config["eval"]["tasks"]["batch_size"],
        device=config["device"],
        dtype=lambda wc: model_cfg(wc.model)["dtype"],
        data_dir=data_dir_arg(),
        code=code_version("tasks"),
    log:
        f"{RESULTS}/logs/eval_tasks/{{model}}/{{method}}/{{variant}}.log",
    threads: threads_of("eval_tasks")
    resources:
        **resources_of("eval_tasks"),
    conda:
        "../../envs/core.yaml"
    shell:
        "wandapp tasks --model {input.model:q} --tasks {params.tasks:q} {params.limit:q}"
        " --batch-size {params.batch_size:q} --device {params.device:q} --dtype {params.dtype:q} {params.data_dir:q}"
        " --output {output:q} > {log:q} 2>&1"
