# Speed of the sparse model against its dense form (2:4 kernels need a GPU; on a CPU-only machine
# `wandapp bench` records {"skipped": true, "reason": ...} and succeeds).


rule bench:
    input:
        model=f"{RESULTS}/models/{{model}}/{{method}}/{{sparsity}}",
    output:
        f"{RESULTS}/metrics/{{model}}/{{method}}/{{sparsity}}/bench.json",
    params:
        extra=config["bench"]["extra_args"],  # verbatim: flags
        code=code_version("bench"),
    log:
        f"{RESULTS}/logs/bench/{{model}}/{{method}}/{{sparsity}}.log",
    threads: threads_of("bench")
    resources:
        **resources_of("bench"),
    conda:
        "../../envs/core.yaml"
    shell:
        "wandapp bench --model {input.model:q} {params.extra} --output {output:q} > {log:q} 2>&1"
