# Load each model once from its source (hub id, folder, GGUF, 'smollm2') and save a safetensors folder that
# every later rule loads quickly. The folder is kept: it is also the dense baseline.


rule convert:
    output:
        directory(f"{RESULTS}/models/{{model}}/base"),
    params:
        source=lambda wc: MODELS[wc.model]["source"],
        allow_pickle=lambda wc: optional_flag("--allow-pickle", MODELS[wc.model].get("allow_pickle")),
        dtype=lambda wc: model_cfg(wc.model)["dtype"],
        code=code_version("convert"),
    log:
        f"{RESULTS}/logs/convert/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/convert/{{model}}.tsv"
    threads: threads_of("convert")
    resources:
        **resources_of("convert"),
    conda:
        "../../envs/core.yaml"
    shell:
        "wandapp convert --model {params.source:q} {params.allow_pickle:q} --dtype {params.dtype:q}"
        " --output {output:q} > {log:q} 2>&1"
