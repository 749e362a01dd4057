# Zero-shot accuracy with lm-eval on the configured tasks (local mirror when data_dir is set).


rule eval_tasks:
    input:
        model=model_dir,
    output:
        f"{RESULTS}/metrics/{{model}}/{{method}}/{{variant}}/tasks.json",
    params:
        tasks=",".join(config["eval"]["tasks"]["names"]),
        limit=f"--limit {config['eval']['tasks']['limit']}" if config["eval"]["tasks"]["limit"] else "",
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
        "gpu_slot wandapp tasks --model {input.model} --tasks {params.tasks} {params.limit}"
        " --batch-size {params.batch_size} --device {params.device} --dtype {params.dtype} {params.data_dir}"
        " --output {output} > {log} 2>&1"
