# Perplexity of the dense, pruned or LoRA-tuned model on one dataset, in windows of the model's seqlen.


rule eval_ppl:
    input:
        model=model_dir,
    output:
        f"{RESULTS}/metrics/{{model}}/{{method}}/{{variant}}/ppl_{{dataset}}.json",
    params:
        split=config["eval"]["ppl"]["split"],
        seqlen=lambda wc: model_cfg(wc.model)["seqlen"],
        dtype=lambda wc: model_cfg(wc.model)["dtype"],
        max_windows=(
            f"--max-windows {config['eval']['ppl']['max_windows']}" if config["eval"]["ppl"]["max_windows"] else ""
        ),
        device=config["device"],
        data_dir=data_dir_arg(),
        code=code_version("ppl"),
    log:
        f"{RESULTS}/logs/eval_ppl/{{model}}/{{method}}/{{variant}}/{{dataset}}.log",
    threads: threads_of("eval_ppl")
    resources:
        **resources_of("eval_ppl"),
    conda:
        "../../envs/core.yaml"
    shell:
        "gpu_slot wandapp ppl --model {input.model} --dataset {wildcards.dataset} --split {params.split}"
        " --seqlen {params.seqlen} {params.max_windows} --device {params.device} --dtype {params.dtype}"
        " {params.data_dir} --output {output} > {log} 2>&1"
