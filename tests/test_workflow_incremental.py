"""Incremental reruns: after a finished run, a real `snakemake --dry-run` plans exactly the jobs a change affects.

The finished run is real Snakemake on a copy of the workflow and package, with every rule's `wandapp` answered by
a stub that only writes the outputs (the rules find `wandapp` beside Snakemake's interpreter, so the stub sits in
a throw-away venv folder that reuses the real venv's libraries). What is tested is the planning: parameters and
per-stage code hashes (wandapp.codeversion) as Snakemake's rerun triggers.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

STUB = """\
#!{python}
# Stand-in for `wandapp` in the incremental-rerun test: writes each command's outputs, computes nothing.
import json, os, sys
cmd, out = sys.argv[1], sys.argv[sys.argv.index("--output") + 1]
if cmd in ("convert", "prune", "lora"):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, cmd + "_report.json"), "w") as f:
        json.dump({{"stub": cmd}}, f)
elif cmd == "report":
    os.makedirs(out, exist_ok=True)
    for name in ("ppl", "ppl_relative", "prune_cost", "accuracy", "speedup", "improvement"):
        for ext in ("png", "svg"):
            open(os.path.join(out, name + "." + ext), "w").close()
    for name in ("summary.csv", "summary.md", "paper_tables.md", "table1_ppl.csv", "table2_zero_shot.csv",
                 "table3_lora.csv", "table4_prune_cost.csv"):
        open(os.path.join(out, name), "w").close()
else:
    with open(out, "w") as f:
        json.dump({{"stub": cmd}}, f)
"""

CONFIG = {
    "results_dir": "results",
    "reports_dir": "results/reports",
    "keep_pruned_models": True,
    "device": "cpu",
    "models": {"tiny": {"source": "tiny-model", "dtype": "float32", "seqlen": 16}},
    "methods": {"wanda": None, "wanda++": {"alpha": 100, "ro_lr": 3.0e-7, "ro_rounds": 1, "ro_samples": 2}},
    "dense": True,
    "sparsities": ["2:4"],
    "calibration": {"dataset": "c4", "nsamples": 2, "seed": 0},
    "eval": {"ppl": {"datasets": ["wikitext2"], "split": "test", "max_windows": 2},
             "tasks": {"enabled": False, "names": ["rte"], "limit": 8, "batch_size": 8}},
    "lora": {"enabled": False},
    "bench": {"enabled": True, "patterns": ["2:4"]},
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run of CONFIG in a copy of the workflow; yields (workflow copy, its interpreter)."""
    root = tmp_path_factory.mktemp("incremental")
    venv, work = root / "venv", root / "work"
    (venv / "bin").mkdir(parents=True)
    real_venv = Path(sys.prefix)
    shutil.copy(real_venv / "pyvenv.cfg", venv / "pyvenv.cfg")
    (venv / "lib").symlink_to(real_venv / "lib")
    (venv / "bin" / "python").symlink_to(os.path.realpath(sys.executable))
    stub = venv / "bin" / "wandapp"
    stub.write_text(STUB.format(python=venv / "bin" / "python"))
    stub.chmod(0o755)
    work.mkdir()
    shutil.copy(REPO / "Snakefile", work)
    for folder in ("workflow", "wandapp", "envs"):
        shutil.copytree(REPO / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__"))
    write(work, "config.yaml", CONFIG)
    r = snakemake(work, venv, "--configfile", "config.yaml", "--cores", "1")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return work, venv


def write(work: Path, name: str, config: dict) -> str:
    (work / name).write_text(yaml.safe_dump(config))
    return name


def snakemake(work: Path, venv: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(work))  # the copy's package: its code hashes, its edits
    return subprocess.run([str(venv / "bin" / "python"), "-m", "snakemake", "--workflow-profile", "none", *args],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)


def planned(work: Path, venv: Path, configfile: str = "config.yaml") -> dict[str, list[str]]:
    """{rule: [the output path of each planned job]} from a real dry run (no -F: only what must rerun)."""
    r = snakemake(work, venv, "--configfile", configfile, "--cores", "1", "--dry-run")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    if "Nothing to be done" in r.stdout + r.stderr:
        return {}
    jobs: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", r.stdout):
        if m := re.match(r"(?:local)?rule (\w+):", block):
            out = re.search(r"^\s+output: (.*)$", block, re.M)
            jobs.setdefault(m[1], []).append(out[1] if out else "")
    return jobs


def counts(jobs: dict[str, list[str]]) -> dict[str, int]:
    return {rule: len(outs) for rule, outs in jobs.items()}


@pytest.fixture
def edit(finished):
    """Append a comment to a module of the copy's package for one test, then put the file back."""
    work, _ = finished
    saved = {}

    def edit_module(relative: str) -> None:
        path = work / "wandapp" / relative
        saved[path] = path.read_text()
        path.write_text(saved[path] + "\n# an edit\n")

    yield edit_module
    for path, text in saved.items():
        path.write_text(text)


def test_a_finished_run_plans_nothing(finished):
    assert planned(*finished) == {}


def test_a_method_parameter_reruns_only_that_methods_jobs(finished):
    work, venv = finished
    config = yaml.safe_load(yaml.safe_dump(CONFIG))
    config["methods"]["wanda++"]["ro_lr"] = 1.0e-6
    jobs = planned(work, venv, write(work, "changed.yaml", config))
    assert counts(jobs) == {"prune": 1, "eval_ppl": 1, "bench": 1, "report": 1, "all": 1}
    for rule in ("prune", "eval_ppl", "bench"):
        assert "/wanda++/" in jobs[rule][0], jobs[rule]


def test_an_evaluation_parameter_reruns_only_the_evaluations(finished):
    work, venv = finished
    config = yaml.safe_load(yaml.safe_dump(CONFIG))
    config["eval"]["ppl"]["max_windows"] = 3
    jobs = planned(work, venv, write(work, "changed.yaml", config))
    assert counts(jobs) == {"eval_ppl": 3, "report": 1, "all": 1}  # dense + two pruned


@pytest.mark.parametrize("module,want", [
    ("evaluate/ppl.py", {"eval_ppl": 3, "report": 1, "all": 1}),
    ("methods/wanda.py", {"prune": 2, "eval_ppl": 2, "bench": 2, "report": 1, "all": 1}),
    ("report.py", {"report": 1, "all": 1}),
])
def test_a_code_change_reruns_exactly_its_stage_and_what_follows(finished, edit, module, want):
    edit(module)
    jobs = planned(*finished)
    assert counts(jobs) == want
    if "prune" in want:  # the dense baseline is never pruned, so its evaluation stays
        assert not any("/dense/" in out for out in jobs["eval_ppl"])
