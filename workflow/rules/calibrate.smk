# Sample the calibration windows once per model (tokenizer), dataset, nsamples, seqlen and seed;
# every method and sparsity reuses the same file, so they all see identical data.


rule calibrate:
    input:
        model=f"{RESULTS}/models/{{model}}/base",
    output:
        f"{RESULTS}/calib/{{model}}/{{dataset}}-n{{nsamples}}-l{{seqlen}}-s{{seed}}.safetensors",
    wildcard_constraints:
        nsamples=r"\d+",
        seqlen=r"\d+",
        seed=r"\d+",
    params:
        calibration=config["calibration"]["dataset"],
        data_dir=data_dir_arg(),
        code=code_version("calibrate"),
    log:
        f"{RESULTS}/logs/calibrate/{{model}}/{{dataset}}-n{{nsamples}}-l{{seqlen}}-s{{seed}}.log",
    threads: threads_of("calibrate")
    resources:
        **resources_of("calibrate"),
    conda:
        "../../envs/core.yaml"
    shell:
        "wandapp calibrate --model {input.model:q} --calibration {params.calibration:q}"
        " --nsamples {wildcards.nsamples:q} --seqlen {wildcards.seqlen:q} --seed {wildcards.seed:q}"
        " {params.data_dir:q} --output {output:q} > {log:q} 2>&1"
