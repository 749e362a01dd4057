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
        method=lambda wc: shlex.quote(method_name(wc.method)),
        sparsity=lambda wc: sparsity_arg(wc.sparsity),
        flags=prune_flags,
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
        "(gpu_slot wandapp prune --model {input.model} --method {params.method} --sparsity {params.sparsity}"
        " --calibration {input.calibration} --nsamples {params.nsamples} --seqlen {params.seqlen}"
        " --seed {params.seed} --device {params.device} --dtype {params.dtype} {params.flags}"
        " --output {output.model}"
        " && cp {output.model}/prune_report.json {output.report}) > {log} 2>&1"
