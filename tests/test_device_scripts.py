"""The device run scripts parse, refuse unknown modes with exit 2, and keep what they carry out of git."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ["scripts/device_workflow.sh", "scripts/fetch_device_wheels.sh"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_parses(script):
    r = subprocess.run(["bash", "-n", str(REPO / script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_unknown_mode_is_one_line_exit_2(tmp_path):
    r = subprocess.run(["bash", str(REPO / "scripts/device_workflow.sh"), "frobnicate"], capture_output=True,
                       text=True, env={"PATH": "/usr/bin:/bin", "WRUN": str(tmp_path)})
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "unknown mode frobnicate" in r.stderr


def test_status_without_a_run_says_so(tmp_path):
    r = subprocess.run(["bash", str(REPO / "scripts/device_workflow.sh"), "status"], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "WRUN": str(tmp_path)})
    assert r.returncode == 0 and "no workflow log yet" in r.stdout


@pytest.mark.parametrize("path", [".whl/x.whl", ".carry/wf1/gguf.part1", ".carry/wf-resume/wrun-results.tar.gz"])
def test_carried_paths_are_git_ignored(path):
    assert subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0
