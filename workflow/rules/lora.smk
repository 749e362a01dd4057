# Optional LoRA recovery of a pruned model (lora.enabled). The output is a merged, still-sparse model folder,
# evaluated like any other under the variant "<sparsity>+lora".


rule lora:
    input:
        model=f"{RESULTS}/models/{{model}}/{{method}}/{{sparsity}}",
    output:
        model=directory(maybe_temp(f"{RESULTS}/models/{{model}}/{{method}}/{{sparsity}}+lora")),
        report=f"{RESULTS}/metrics/{{model}}/{{method}}/{{sparsity}}+lora/lora.json",
    params:
        steps=config["lora"]["steps"],
        seqlen=config["lora"]["seqlen"],
        extra=config["lora"]["extra_args"],  # verbatim: flags
        device=config["device"],
        dtype=lambda wc: model_cfg(wc.model)["dtype"],
        data_dir=data_dir_arg(),
        code=code_version("lora"),
    log:
        f"{RESULTS}/logs/lora/{{model}}/{{method}}/{{sparsity}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/lora/{{model}}/{{method}}/{{sparsity}}.tsv"
    threads: threads_of("lora")
    resources:
        **resources_of("lora"),
    conda:
        "../../envs/core.yaml"
    shell:
        "(wandapp lora --model {input.model:q} --steps {params.steps:q} --seqlen {params.seqlen:q}"
        " --device {params.device:q} --dtype {params.dtype:q} {params.data_dir:q} {params.extra}"
        " --output {output.model:q} && cp {output.model:q}/lora_report.json {output.report:q}) > {log:q} 2>&1"
