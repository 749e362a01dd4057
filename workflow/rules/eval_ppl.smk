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
        max_windows=optional_flag("--max-windows", config["eval"]["ppl"]["max_windows"]),
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
        "wandapp ppl --model {input.model:q} --dataset {wildcards.dataset:q} --split {params.split:q}"
        " --seqlen {params.seqlen:q} {params.max_windows:q} --device {params.device:q} --dtype {params.dtype:q}"
        " {params.data_dir:q} --output {output:q} > {log:q} 2>&1"
