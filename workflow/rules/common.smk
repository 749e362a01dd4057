# Config validation, result paths, target lists and input functions shared by every rule file.
# Paths: RESULTS/models/{model}/base            converted model (kept; every later step loads it)
#        RESULTS/calib/{model}/{calib}.safetensors  calibration windows, shared by all methods and sparsities
#        RESULTS/models/{model}/{method}/{variant}   pruned model, temp() unless kept
#        RESULTS/metrics/{model}/{method}/{variant}/{prune,lora,ppl_<dataset>,tasks,bench}.json
# {variant} is the sparsity, with the suffix LORA_SUFFIX for the LoRA-tuned model.
# {sparsity} is SparsityPattern.path_label of the config string ("2:4" -> "2-4"); the dense baseline is dense/0.

import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import yaml
from snakemake.utils import validate

# The one wandapp module the workflow imports: light (no torch, no pandas), so parsing stays fast.
from wandapp.workflow import (DENSE, LORA_SUFFIX, ConfigError, SparsityPattern, check_config, path_label,
                              pattern_of, stage_code_hash)

# One line naming the bad key (Snakemake's validate prints the whole schema on a typo), then the checks a schema
# cannot make (method labels, N:M values, model sources, data_dir); sparsity labels are normalised ('.5' -> '0.5').
# The method names come from the schema's enum, which is generated from wandapp.methods.METHODS.
_SCHEMA = yaml.safe_load(Path(workflow.basedir, "workflow/schemas/config.schema.yaml").read_text())
try:
    check_config(config, _SCHEMA, _SCHEMA["properties"]["methods"]["additionalProperties"]["properties"]["method"]["enum"])
except ConfigError as e:
    print(f"Error validating config file: {e}", file=sys.stderr)
    sys.exit(2)
validate(config, schema="../schemas/config.schema.yaml")  # valid by now; fills in the schema's defaults


def wandapp_command():
    """How rules call wandapp: from this checkout inside a rule's conda env (--sdm conda, the env holds only the
    dependencies), else the wandapp beside this Snakemake's Python (.venv/bin/snakemake), else the one on PATH."""
    from snakemake_interface_executor_plugins.settings import DeploymentMethod

    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
        return f"PYTHONPATH={shlex.quote(workflow.basedir)} python -m wandapp"
    beside = Path(sys.executable).parent / "wandapp"
    if config.get("warm_start") and beside.is_file():  # jobs fork from one server (wandapp/warm.py)
        return f"{shlex.quote(sys.executable)} -m wandapp.warm run {shlex.quote(WARM_SOCKET)} --"
    return shlex.quote(str(beside) if beside.is_file() else (shutil.which("wandapp") or "wandapp"))


# warm_start: one server imports torch, transformers and lm-eval once and every local job forks from it
# (wandapp/warm.py); a job that finds no server (not up yet, or a remote node) starts cold, the same command.
WARM_SOCKET = f"{config['results_dir']}/.warm.sock"


def warm_server(action):
    import subprocess

    if not config.get("warm_start"):
        return
    if action == "stop":
        subprocess.run([sys.executable, "-m", "wandapp.warm", "stop", WARM_SOCKET], check=False)
        return
    os.makedirs(config["results_dir"], exist_ok=True)
    with open(f"{config['results_dir']}/.warm.log", "w") as log:
        subprocess.Popen([sys.executable, "-m", "wandapp.warm", "serve", WARM_SOCKET, "--idle", "600"],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)


onstart:
    warm_server("start")


onsuccess:
    warm_server("stop")


onerror:
    warm_server("stop")


def gpu_slot_function():
    """The bash function `gpu_slot CMD` that GPU rules put before their command. With `gpus: N` (N > 0),
    `wandapp gpu-slot` gives each concurrent job its own GPU of this host (a lock file per id under
    RESULTS/.gpu-slots; CUDA_VISIBLE_DEVICES set for the job); with 0, and always under SLURM, CMD runs as is."""
    if config["gpus"]:
        slots = shlex.quote(f"{config['results_dir']}/.gpu-slots")
        return f'gpu_slot() {{{{ wandapp gpu-slot --gpus {config["gpus"]} --dir {slots} -- "$@"; }}}}; '
    return 'gpu_slot() {{ "$@"; }}; '


# Rules call plain `wandapp`: the shell prefix defines it as a bash function running wandapp_command(). The
# command holds this machine's interpreter path, so it stays out of params, where a moved checkout or another
# venv would make every job rerun.
# (Snakemake formats the prefix like a shell command, so its braces are doubled once more.)
shell.prefix(f'set -euo pipefail; export WANDAPP_JOB_LOG=1; wandapp() {{{{ {wandapp_command()} "$@"; }}}}; '
             f'{gpu_slot_function()}')

RESULTS = config["results_dir"]
REPORTS = config["reports_dir"]
MODELS = config["models"]
METHODS = {label: (spec or {}) for label, spec in config["methods"].items()}


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    method="|".join(map(re.escape, [*METHODS, DENSE])),
    sparsity=r"[0-9.]+(-[0-9]+)?",
    variant=r"[0-9.]+(-[0-9]+)?(\+lora)?",
    dataset=r"[A-Za-z0-9_]+",


def method_name(label):
    return METHODS[label].get("method", label)


def runs_at(label, sparsity):
    """An OWL-profiled method has per-block unstructured ratios: it skips the N:M sparsities."""
    return ":" not in sparsity or METHODS[label].get("sparsity_profile", "uniform") == "uniform"


def model_cfg(model):
    spec = MODELS[model]
    return {"dtype": "float32", "seqlen": 2048, **spec}


# Rules quote every value they put in a shell command ({params.x:q}); an optional flag is a list, which :q
# quotes item by item (an empty list is nothing). Only the *extra_args strings go in verbatim: they hold flags.


def optional_flag(flag, value):
    return [flag, str(value)] if value not in (None, "", False) else []


def data_dir_arg():
    return optional_flag("--data-dir", config.get("data_dir"))


def code_version(command):
    """Hash of the wandapp sources `wandapp COMMAND` imports: an edit there reruns this stage (params trigger)."""
    return stage_code_hash(command)


def rule_resources(rule):
    """Resources for `rule` from config (rule entry over `default`), with a floor that SLURM jobs need."""
    res = {"threads": 1, "mem_mb": 2000, "runtime": 30, "gpu": 0}
    res.update(config["resources"].get("default", {}))
    res.update(config["resources"].get(rule, {}))
    return res


def threads_of(rule):
    return rule_resources(rule)["threads"]


def resources_of(rule):
    # gpu=0 is left out: the SLURM plugin would turn any gpu key into a --gpus request.
    return {k: v for k, v in rule_resources(rule).items() if k != "threads" and not (k == "gpu" and v == 0)}


# ---- paths -------------------------------------------------------------------------------------------------------


def base_model_dir(model):
    return f"{RESULTS}/models/{model}/base"


def calib_file(model):
    cal = config["calibration"]
    seqlen = model_cfg(model)["seqlen"]
    slug = re.sub(r"[^A-Za-z0-9_]", "_", Path(cal["dataset"]).stem)  # a file path becomes its stem
    name = f"{slug}-n{cal['nsamples']}-l{seqlen}-s{cal['seed']}"
    return f"{RESULTS}/calib/{model}/{name}.safetensors"


def model_dir(wildcards):
    """Folder of the model that the metrics for {model}/{method}/{variant} are computed on."""
    if wildcards.method == DENSE:
        return base_model_dir(wildcards.model)
    return f"{RESULTS}/models/{wildcards.model}/{wildcards.method}/{wildcards.variant}"


def metrics_dir(model, method, variant):
    return f"{RESULTS}/metrics/{model}/{method}/{variant}"


# ---- targets -----------------------------------------------------------------------------------------------------


def stage_config(stage):
    return config["lora"] if stage == "lora" else config["eval"][stage]


def in_stage(stage, model, method, sparsity):
    """Whether `stage` (ppl, tasks, lora) covers this pruned model; the dense baseline needs only its model listed."""
    cfg = stage_config(stage)
    wanted = {"models": model, "methods": method, "sparsities": sparsity}
    if method == DENSE:
        wanted = {"models": model}
    return all(cfg.get(key) is None or value in cfg[key] for key, value in wanted.items())


def variants():
    """(model, method, variant, sparsity) for every model built: dense baseline, pruned, LoRA-tuned where on.

    Every method is pruned at every sparsity (the prune report is the cost table); the stage subsets decide
    which of them are evaluated or LoRA-tuned."""
    out = []
    for model in MODELS:
        if config["dense"]:
            out.append((model, DENSE, "0", None))
        for method in METHODS:
            for sparsity in config["sparsities"]:
                if not runs_at(method, sparsity):
                    continue
                out.append((model, method, path_label(sparsity), sparsity))
                if config["lora"]["enabled"] and in_stage("lora", model, method, sparsity):
                    out.append((model, method, f"{path_label(sparsity)}{LORA_SUFFIX}", sparsity))
    return out


def metric_files():
    """Every per-model JSON the report collects; the set follows which stages the config turns on, and where."""
    files = []
    tasks = config["eval"]["tasks"]
    for model, method, variant, sparsity in variants():
        d = metrics_dir(model, method, variant)
        lora = variant.endswith(LORA_SUFFIX)
        if in_stage("ppl", model, method, sparsity):
            files += [f"{d}/ppl_{ds}.json" for ds in config["eval"]["ppl"]["datasets"]]
        if tasks["enabled"] and in_stage("tasks", model, method, sparsity) and (tasks.get("lora", True) or not lora):
            files.append(f"{d}/tasks.json")
        if method == DENSE:
            continue
        if lora:
            files.append(f"{d}/lora.json")
            continue
        files.append(f"{d}/prune.json")
        if config["bench"]["enabled"] and benched(variant):
            files.append(f"{d}/bench.json")
    return files


def report_figures():
    names = ["ppl", "ppl_relative", "prune_cost", "improvement"]
    if config["eval"]["tasks"]["enabled"]:
        names.append("accuracy")
    if config["bench"]["enabled"]:
        names.append("speedup")
    return names


def prune_flags(wildcards):
    """`wandapp prune` flags from the method's config entry, in its order: {alpha: 100} -> ["--alpha", "100"],
    a true boolean -> ["--flag"] (each token quoted by :q). Every key is a flag: the schema, generated from the
    methods' dataclass fields, lists them."""
    flags = []
    for key, value in METHODS[wildcards.method].items():
        if key in ("method", "extra_args") or value is False:
            continue
        flags += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return flags


def prune_extra_args(wildcards):
    """The method's extra_args, passed to the shell verbatim (it exists for flags wandapp has no key for)."""
    return METHODS[wildcards.method].get("extra_args", "")


def maybe_temp(path):
    return path if config["keep_pruned_models"] else temp(path)


def benched(variant):
    return pattern_of(variant) in {SparsityPattern.parse(p) for p in config["bench"]["patterns"]}
