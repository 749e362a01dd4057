# Prune one model with one method at one sparsity. The model folder is temp() unless keep_pruned_models is set;
# its prune_report.json is copied to the metrics folder, which is kept.


rule prune:
    input:
        model=lambda wc: base_model_dir(wc.model),
        calibration=lambda wc: calib_file(wc.model),
    output:
        model=directory(maybe_temp(f"{RESULTS}/models/{{model}}/{{method}}/{{sparsity}}")),
        report=f"{RESULTS}/metrics/{{model}}/{{method}}/{{sparsity}}/prune.json",
    params:
        method=lambda wc: method_name(wc.method),
        sparsity=lambda wc: pattern_of(wc.sparsity).label,
        flags=prune_flags,
        extra=prune_extra_args,  # verbatim: flags
        nsamples=config["calibration"]["nsamples"],
        seqlen=lambda wc: model_cfg(wc.model)["seqlen"],
        dtype=lambda wc: model_cfg(wc.model)["dtype"],
        seed=config["prune"]["seed"],
        device=config["device"],
        code=code_version("prune"),
    log:
        f"{RESULTS}/logs/prune/{{model}}/{{method}}/{{sparsity}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prune/{{model}}/{{method}}/{{sparsity}}.tsv"
    threads: threads_of("prune")
    resources:
        **resources_of("prune"),
    conda:
        "../../envs/core.yaml"
    shell:
        "(wandapp prune --model {input.model:q} --method {params.method:q} --sparsity {params.sparsity:q}"
        " --calibration {input.calibration:q} --nsamples {params.nsamples:q} --seqlen {params.seqlen:q}"
        " --seed {params.seed:q} --device {params.device:q} --dtype {params.dtype:q} {params.flags:q} {params.extra}"
        " --output {output.model:q}"
        " && cp {output.model:q}/prune_report.json {output.report:q}) > {log:q} 2>&1"
