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


def test_paper_config_dag():
    """paper.yaml runs what the paper reports: Table 1 everywhere, Table 2 and LoRA on LLaMA-1 7B at 2:4 only."""
    r = dry_run("--configfile", "workflow/configs/paper.yaml", "-p")
    assert r.returncode == 0, r.stderr + r.stdout
    counts = job_counts(r.stdout)
    config = yaml.safe_load((REPO / "workflow/configs/paper.yaml").read_text())
    assert set(config["methods"]) == {"sparsegpt", "wanda", "gblm", "wanda++-ro", "wanda++-rgs", "wanda++"}
    assert config["eval"]["tasks"]["names"] == list(PAPER_TASKS)
    assert counts["convert"] == 5 and counts["calibrate"] == 5
    assert counts["prune"] == 5 * 6 * 3
    assert counts["eval_tasks"] == 1 + 4  # dense, Wanda, GBLM, Wanda++ RGS, Wanda++ (was 95 before subsets)
    assert counts["lora"] == 2  # Wanda, Wanda++
    assert counts["eval_ppl"] == 5 * (1 + 6 * 3) + 2  # every model, plus the two LoRA-tuned ones
    assert "--nsamples 128 --seqlen 2048" in r.stdout
    assert "huggyllama/llama-13b" in r.stdout
    tasks_jobs = re.findall(r"wandapp tasks --model (\S+)", r.stdout)
    assert sorted(tasks_jobs) == sorted(f"results/paper/models/llama-7b/{m}" for m in
                                        ["base", "wanda/2-4", "gblm/2-4", "wanda++-rgs/2-4", "wanda++/2-4"])
    assert "--tasks wic,mrpc,hellaswag,arc_easy,arc_challenge,winogrande,boolq,rte,mmlu" in r.stdout


def test_gpu_config_dag():
    """gpu.yaml: SmolLM2 at the paper's protocol, every method x 3 sparsities, nine tasks at 2:4, LoRA x 2."""
    r = dry_run("--configfile", "workflow/configs/gpu.yaml", "--cores", "16", "--resources", "gpu=1", "-p")
    assert r.returncode == 0, r.stderr + r.stdout
    counts = job_counts(r.stdout)
    config = yaml.safe_load((REPO / "workflow/configs/gpu.yaml").read_text())
    assert set(config["methods"]) == {"magnitude", "wanda", "sparsegpt", "gblm", "wanda++", "wanda++-rgs", "wanda++-ro"}
    assert config["device"] == "cuda" and config["eval"]["tasks"]["names"] == list(PAPER_TASKS)
    methods = len(config["methods"])
    assert counts["convert"] == 1 and counts["calibrate"] == 1
    assert counts["prune"] == methods * 3
    assert counts["eval_ppl"] == 1 + methods * 3 + 2  # dense, every pruned model, the two LoRA-tuned ones
    assert counts["eval_tasks"] == 1 + methods  # dense and every method at 2:4
    assert counts["lora"] == 2 and "bench" not in counts
    assert "--nsamples 128 --seqlen 2048" in r.stdout and "--device cuda" in r.stdout
    assert "--max-windows" not in r.stdout and "--limit" not in r.stdout  # whole split, whole tasks
    assert re.search(r"wandapp lora --model \S+/wanda\+\+/2-4 ", r.stdout)
    assert config["resources"]["prune"]["gpu"] > 1 and config["resources"]["eval_tasks"]["gpu"] == 1


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
    assert "tasks.methods names ['wandaa']" in r.stderr + r.stdout


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
    assert "report.py" in report and not any(f.startswith("methods/") for f in report)
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


def test_schema_accepts_every_prune_hyperparameter():
    from wandapp.commands.prune import HYPERPARAMETERS

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    method_keys = set(schema["properties"]["methods"]["additionalProperties"]["properties"])
    flags = {flag.lstrip("-").replace("-", "_") for flag, _, _ in HYPERPARAMETERS}
    assert flags <= method_keys, flags - method_keys


def test_workflow_lints_clean():
    # `snakemake --lint` flags rules that read globals in shell commands or compose paths with '+'; rules call
    # plain `wandapp` (a function the shell prefix defines), so the lint must stay empty.
    r = subprocess.run([str(SNAKEMAKE), "--lint", "--workflow-profile", "none", "--snakefile", str(REPO / "Snakefile")],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Lints for" not in r.stdout + r.stderr, r.stdout + r.stderr
