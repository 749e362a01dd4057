"""The Snakemake workflow: config validation, the DAG of each shipped config, per-stage code hashes.

Dry runs only (a few seconds each); the end-to-end run is in .ci/run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from wandapp.codeversion import stage_code_hash, stage_files
from wandapp.evaluate.tasks import PAPER_TASKS

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def dry_run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    # -F: list every job even where results/ already holds outputs; no profile, so nothing local leaks in.
    return subprocess.run(
        [str(SNAKEMAKE), "-n", "-F", "--workflow-profile", "none", "--cores", "1", "--snakefile",
         str(REPO / "Snakefile"), *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )


def job_counts(output: str) -> dict[str, int]:
    stats = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}


def write_config(tmp_path: Path, base: str, **changes) -> Path:
    config = yaml.safe_load((REPO / base).read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        node = config
        for p in parents:
            if node.get(p) is None:
                node[p] = {}
            node = node[p]
        node[key] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_default_config_dag():
    r = dry_run()
    assert r.returncode == 0, r.stderr + r.stdout
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    methods, sparsities = len(config["methods"]), len(config["sparsities"])
    assert {"wanda++", "wanda++-rgs", "wanda++-ro", "wanda", "sparsegpt", "magnitude"} <= set(config["methods"])
    counts = job_counts(r.stdout)
    assert counts["convert"] == 1
    assert counts["calibrate"] == 1  # shared by every method and sparsity
    assert counts["prune"] == methods * sparsities
    assert counts["eval_ppl"] == methods * sparsities + 1  # + dense, which is never pruned
    assert counts["eval_tasks"] == methods * sparsities + 1
    assert counts["bench"] == methods  # 2:4 only
    assert counts["report"] == 1
    assert "lora" not in counts


def test_configfile_replaces_default(tmp_path):
    r = dry_run("--configfile", "workflow/configs/ci.yaml")
    assert r.returncode == 0, r.stderr + r.stdout
    assert job_counts(r.stdout)["prune"] == 2
    assert "results/models/smollm2/magnitude" not in r.stdout


def shipped_config(tmp_path: Path, name: str) -> tuple[Path, dict, int]:
    """A shipped config less the methods this checkout lacks (gblm comes from another branch), the config as
    shipped, and how many methods were left out."""
    from wandapp.methods import method_names

    shipped = yaml.safe_load((REPO / name).read_text())
    config = yaml.safe_load((REPO / name).read_text())
    missing = [m for m, spec in config["methods"].items() if m not in method_names() and not (spec or {}).get("method")]
    for m in missing:
        del config["methods"][m]
        for stage in (config["eval"]["tasks"], config["lora"]):
            if stage.get("methods"):
                stage["methods"] = [x for x in stage["methods"] if x != m]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, shipped, len(missing)


def test_paper_config_dag(tmp_path):
    """paper.yaml runs what the paper reports: Table 1 everywhere, Table 2 and LoRA on LLaMA-1 7B at 2:4 only."""
    path, config, missing = shipped_config(tmp_path, "workflow/configs/paper.yaml")
    r = dry_run("--configfile", str(path), "-p")
    assert r.returncode == 0, r.stderr + r.stdout
    counts = job_counts(r.stdout)
    assert set(config["methods"]) == {"sparsegpt", "wanda", "gblm", "wanda++-ro", "wanda++-rgs", "wanda++"}
    assert config["eval"]["tasks"]["names"] == list(PAPER_TASKS)
    methods = 6 - missing
    assert counts["convert"] == 5 and counts["calibrate"] == 5
    assert counts["prune"] == 5 * methods * 3
    assert counts["eval_tasks"] == 1 + 4 - missing  # dense, Wanda, GBLM, Wanda++ RGS, Wanda++ (was 95 before subsets)
    assert counts["lora"] == 2  # Wanda, Wanda++
    assert counts["eval_ppl"] == 5 * (1 + methods * 3) + 2  # every model, plus the two LoRA-tuned ones
    assert "--nsamples 128 --seqlen 2048" in r.stdout
    assert "huggyllama/llama-13b" in r.stdout
    tasks_jobs = re.findall(r"wandapp tasks --model (\S+)", r.stdout)
    expected = ["base", "wanda/2-4", "wanda++-rgs/2-4", "wanda++/2-4"] + (["gblm/2-4"] if not missing else [])
    assert sorted(tasks_jobs) == sorted(f"results/paper/models/llama-7b/{m}" for m in expected)
    assert "--tasks wic,mrpc,hellaswag,arc_easy,arc_challenge,winogrande,boolq,rte,mmlu" in r.stdout


def test_gpu_config_dag(tmp_path):
    """gpu.yaml: SmolLM2 at the paper's protocol, every method x 3 sparsities, nine tasks at 2:4, LoRA x 2."""
    path, config, missing = shipped_config(tmp_path, "workflow/configs/gpu.yaml")
    r = dry_run("--configfile", str(path), "--cores", "16", "--resources", "gpu=1", "-p")
    assert r.returncode == 0, r.stderr + r.stdout
    counts = job_counts(r.stdout)
    assert set(config["methods"]) == {"magnitude", "wanda", "sparsegpt", "gblm", "wanda++", "wanda++-rgs", "wanda++-ro"}
    assert config["device"] == "cuda" and config["eval"]["tasks"]["names"] == list(PAPER_TASKS)
    methods = len(config["methods"]) - missing
    assert counts["convert"] == 1 and counts["calibrate"] == 1
    assert counts["prune"] == methods * 3
    assert counts["eval_ppl"] == 1 + methods * 3 + 2  # dense, every pruned model, the two LoRA-tuned ones
    assert counts["eval_tasks"] == 1 + methods  # dense and every method at 2:4
    assert counts["lora"] == 2 and "bench" not in counts
    assert "--nsamples 128 --seqlen 2048" in r.stdout and "--device cuda" in r.stdout
    assert "--max-windows" not in r.stdout and "--limit" not in r.stdout  # whole split, whole tasks
    assert re.search(r"wandapp lora --model \S+/wanda\+\+/2-4 ", r.stdout)
    # every GPU rule asks for one slot, so --resources gpu=4 lets four jobs share the GPU (see gpu.yaml)
    gpu_rules = ["prune", "lora", "eval_ppl", "eval_tasks"]
    assert all(config["resources"][rule]["gpu"] == 1 for rule in gpu_rules)
    assert all("gpu" not in config["resources"][rule] for rule in ["convert", "calibrate", "report"])


def test_stage_subsets(tmp_path):
    cfg = write_config(tmp_path, "config.yaml", **{
        "eval.ppl.sparsities": ["0.5"], "eval.tasks.methods": ["wanda"], "eval.tasks.lora": False,
        "lora.enabled": True, "lora.methods": ["wanda", "wanda++"], "lora.sparsities": ["0.5"],
    })
    r = dry_run("--configfile", str(cfg))
    assert r.returncode == 0, r.stderr + r.stdout
    counts = job_counts(r.stdout)
    methods = len(yaml.safe_load((REPO / "config.yaml").read_text())["methods"])
    assert counts["prune"] == methods * 2  # every method at every sparsity: the cost table
    assert counts["eval_ppl"] == 1 + methods + 2  # dense, every method at 50%, both LoRA models
    assert counts["eval_tasks"] == 1 + 2  # dense, wanda at 2:4 and 50%, no LoRA model
    assert counts["lora"] == 2


def test_stage_subset_typo_fails(tmp_path):
    cfg = write_config(tmp_path, "config.yaml", **{"eval.tasks.methods": ["wandaa"]})
    r = dry_run("--configfile", str(cfg))
    assert r.returncode != 0 and "Job stats" not in r.stdout
    assert "eval.tasks.methods: wandaa not in the top-level methods" in r.stderr + r.stdout


def test_owl_profile_runs_at_unstructured_sparsities_only(tmp_path):
    cfg = write_config(tmp_path, "workflow/configs/ci.yaml", sparsities=["2:4", "0.6"],
                       **{"methods.wanda-owl": {"method": "wanda", "sparsity_profile": "owl", "owl_lambda": 0.1},
                          "methods.gblm": {"gradient_norm": "l1"}})
    r = dry_run("--configfile", str(cfg), "-p")
    assert r.returncode == 0, r.stderr + r.stdout
    assert job_counts(r.stdout)["prune"] == 3 * 2 + 1  # wanda, wanda++, gblm at both; wanda-owl at 0.6 only
    assert "--sparsity-profile owl" in r.stdout and "--owl-lambda 0.1" in r.stdout and "--gradient-norm l1" in r.stdout
    assert "wanda-owl/2-4" not in r.stdout


def test_lora_adds_variants(tmp_path):
    cfg = write_config(tmp_path, "workflow/configs/ci.yaml", **{"lora.enabled": True})
    r = dry_run("--configfile", str(cfg))
    assert r.returncode == 0, r.stderr + r.stdout
    counts = job_counts(r.stdout)
    assert counts["lora"] == 2
    assert counts["eval_ppl"] == 1 + 2 + 2  # dense, pruned, pruned + LoRA


@pytest.mark.parametrize(
    "changes,named",
    [
        ({"sparsitys": ["0.5"]}, "'sparsitys' was unexpected"),
        ({"calibration.nsamples": 0}, "calibration"),
        ({"methods.wanda++.alpah": 1}, "'alpah' was unexpected"),
        ({"methods.wanda.method": "wandaa"}, "wandaa"),
        ({"sparsities": ["half"]}, "half"),
        ({"models.smollm2.dtype": "fp8"}, "fp8"),
    ],
)
def test_bad_config_fails_before_any_job(tmp_path, changes, named):
    cfg = write_config(tmp_path, "config.yaml", **changes)
    r = dry_run("--configfile", str(cfg))
    assert r.returncode != 0
    assert "Error validating config file" in r.stderr + r.stdout
    assert named in r.stderr + r.stdout
    assert "Job stats" not in r.stdout


def test_code_hash_follows_imports():
    prune = stage_files("prune")
    assert "commands/prune.py" in prune and "report.py" not in prune
    assert any(f.startswith("methods/") for f in prune)
    report = stage_files("report")
    assert "report.py" in report and "commands/prune.py" not in report  # (it reads the method list from methods/)
    assert stage_code_hash("prune") == stage_code_hash("prune") != stage_code_hash("report")
    assert stage_code_hash("not-a-command") == "missing"


def test_code_change_reruns_only_its_stage(tmp_path, monkeypatch):
    """Editing a module changes the hash of exactly the stages that import it."""
    import wandapp.codeversion as cv

    pkg = tmp_path / "wandapp"
    subprocess.run(["cp", "-r", str(Path(cv.__file__).parent), str(pkg)], check=True)
    monkeypatch.setattr(cv, "PACKAGE_ROOT", pkg)
    before = {s: cv.stage_code_hash(s) for s in ("prune", "ppl", "report")}
    (pkg / "report.py").write_text((pkg / "report.py").read_text() + "\n# edited\n")
    after = {s: cv.stage_code_hash(s) for s in ("prune", "ppl", "report")}
    assert after["report"] != before["report"]
    assert after["prune"] == before["prune"] and after["ppl"] == before["ppl"]


def test_schema_method_entries_are_generated_from_the_methods():
    """The committed schema holds exactly what the methods' dataclass fields generate, and so accepts every
    `wandapp prune` hyperparameter flag."""
    from wandapp.commands.prune import register
    from wandapp.methods import hyperparameter_table
    from wandapp.methods.schema import SCHEMA, profile_properties, updated

    text = SCHEMA.read_text()
    assert updated(text) == text, "stale: run python -m wandapp.methods.schema --write"
    method_keys = set(yaml.safe_load(text)["properties"]["methods"]["additionalProperties"]["properties"])
    profile = set(profile_properties())  # sparsity_profile, owl_m, owl_lambda: prune flags too, for any method
    assert set(hyperparameter_table()) | profile | {"method", "preset", "extra_args"} == method_keys
    import argparse

    sub = argparse.ArgumentParser().add_subparsers()
    register(sub)
    flags = {a.dest for a in sub.choices["prune"]._actions if a.option_strings}
    assert set(hyperparameter_table()) | profile <= flags


def test_config_keys_become_prune_flags(tmp_path):
    """A method entry's keys are passed as flags in their order; a true boolean is a bare switch."""
    cfg = write_config(tmp_path, "workflow/configs/ci.yaml",
                       methods={"wanda++": {"preset": "tuned", "ro_rounds": 1, "track_error": True,
                                            "x_norm": "per-sample", "ro_epochs": 1}})  # (written sorted)
    r = dry_run("--configfile", str(cfg), "-p")
    assert r.returncode == 0, r.stderr + r.stdout
    shell = " ".join(r.stdout.split())  # (an empty extra_args leaves two spaces)
    assert "--preset tuned --ro-epochs 1 --ro-rounds 1 --track-error --x-norm per-sample --output" in shell
    assert "--sparsity 2:4" in r.stdout and "wanda++/2-4" in r.stdout


def test_workflow_imports_one_light_module():
    """The rules import only wandapp.workflow, which needs neither torch nor pandas (nor the CLI); a dry run loads
    no other wandapp module and no torch. (The SLURM executor plugin itself imports pandas.)"""
    imports = {m for f in [REPO / "Snakefile", *(REPO / "workflow").rglob("*.smk")]
               for m in re.findall(r"^\s*(?:from|import) (wandapp[\w.]*)", f.read_text(), re.M)}
    assert imports == {"wandapp.workflow"}
    code = "import sys, wandapp.workflow; print(sorted(m for m in sys.modules if m.startswith(('wandapp', 'torch', " \
           "'pandas'))))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    # (wandapp.commands, the package, is its standard-library command finder; no command module loads)
    assert not [m for m in eval(loaded.stdout) if m.startswith(("torch", "pandas", "wandapp.cli", "wandapp.commands."))]
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "snakemake", "-n", "--workflow-profile", "none",
                        "--cores", "1", "--snakefile", str(REPO / "Snakefile")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    modules = set(re.findall(r"\|\s*([\w.]+)$", r.stderr, re.M))
    assert {m for m in modules if m.startswith("wandapp")} <= set(eval(loaded.stdout))
    assert not {m for m in modules if m == "torch" or m.startswith("torch.")}


def test_workflow_lints_clean():
    # `snakemake --lint` flags rules that read globals in shell commands or compose paths with '+'; rules call
    # plain `wandapp` (a function the shell prefix defines), so the lint must stay empty.
    r = subprocess.run([str(SNAKEMAKE), "--lint", "--workflow-profile", "none", "--snakefile", str(REPO / "Snakefile")],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Lints for" not in r.stdout + r.stderr, r.stdout + r.stderr


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0 and "Job stats" not in r.stdout, r.stdout
    lines = [line for line in (r.stderr + r.stdout).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error validating config file: "), lines
    return lines[0]


@pytest.mark.parametrize(
    "changes,named",
    [
        ({"methods.foo": None}, "methods.foo: not a known method"),
        ({"sparsities": ["5:4"]}, "sparsities[0]: invalid N:M sparsity '5:4'"),
        ({"sparsities": ["2:4", "4:4"]}, "sparsities[1]: invalid N:M sparsity '4:4'"),
        ({"sparsities": ["0:4"]}, "sparsities[0]: invalid N:M sparsity '0:4'"),
        ({"sparsities": ["2:0"]}, "sparsities[0]: invalid N:M sparsity '2:0'"),
        ({"bench.patterns": ["4:2"]}, "bench.patterns[0]: invalid N:M"),
        ({"models.smollm2.source": "./no/such/folder"}, "models.smollm2.source: model not found"),
        ({"models.smollm2.source": "/no/such/model.gguf"}, "models.smollm2.source: model file not found"),
        ({"eval.ppl.datasets": ["wikitext3"]}, "eval.ppl.datasets[0]: 'wikitext3' is not one of"),
        ({"data_dir": "/no/such/mirror"}, "data_dir: /no/such/mirror is not a folder"),
        ({"calibration.dataset": "missing.jsonl"}, "calibration.dataset: 'missing.jsonl' is not"),
        ({"sparsitys": ["0.5"]}, "sparsitys: unknown key ('sparsitys' was unexpected); expected one of: bench,"),
        ({"methods.wanda++.alpah": 1}, "methods.wanda++.alpah: unknown key"),
        ({"models.smollm2.dtype": "fp8"}, "models.smollm2.dtype: 'fp8' is not one of"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path, changes, named):
    cfg = write_config(tmp_path, "config.yaml", **changes)
    assert named in _one_line_error(dry_run("--configfile", str(cfg)))


def test_equal_sparsities_are_one_label(tmp_path):
    cfg = write_config(tmp_path, "workflow/configs/ci.yaml", sparsities=["0.5", ".5", "0.50", "2:4"])
    r = dry_run("--configfile", str(cfg))
    assert r.returncode == 0, r.stderr + r.stdout
    assert job_counts(r.stdout)["prune"] == 2 * 2  # ci.yaml's two methods x {0.5, 2:4}
    assert "/.5" not in r.stdout and "/0.50" not in r.stdout and "/0.5/" in r.stdout


def test_config_strings_reach_the_shell_as_single_words(tmp_path):
    import shlex

    odd = "res dir; touch PWNED #"
    cfg = write_config(tmp_path, "workflow/configs/ci.yaml", results_dir=odd, reports_dir="rep $(touch PWNED)",
                       **{"eval.tasks.enabled": True, "eval.tasks.names": ["arc_easy; touch PWNED #"],
                          "methods.wanda": {"extra_args": "--micro-batch 2"}})
    r = dry_run("--configfile", str(cfg), "-p")
    if r.returncode != 0:  # a stricter schema for task names may refuse it: also safe, if it is one line
        _one_line_error(r)
        cfg = write_config(tmp_path, "workflow/configs/ci.yaml", results_dir=odd, reports_dir="rep $(touch PWNED)",
                           **{"methods.wanda": {"extra_args": "--micro-batch 2"}})
        r = dry_run("--configfile", str(cfg), "-p")
    assert r.returncode == 0, r.stderr + r.stdout
    commands = [line.split("Shell command: ", 1)[1] for line in r.stdout.splitlines() if "Shell command: " in line]
    commands = [c for c in commands if c != "None"]  # rule all
    assert commands
    for command in commands:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)  # ( ) ; && outside quotes: own tokens
        lexer.whitespace_split = True
        words = list(lexer)
        paths = [w for w in words if "res dir" in w or w.startswith("rep ")]
        assert paths and all(w.startswith((odd, "rep $(touch PWNED)")) for w in paths), command
        assert "touch" not in [w for w in words], command  # no word of a config value became a command
        if "--tasks" in words:
            assert words[words.index("--tasks") + 1].startswith("arc_easy; touch PWNED #")
    prune = next(c for c in commands if "--method wanda " in c)
    assert " --micro-batch 2 " in prune  # extra_args stays verbatim: it is for flags
