"""Warm start (wandapp/warm.py): a job run through the server prints, exits and writes as the same command run cold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
# The server without its imports of torch and friends (the jobs below import what they need), so the test is quick.
SERVE = "import sys, wandapp.warm as w; w.preload = lambda: None; w.serve(sys.argv[1], float(sys.argv[2]))"


class Socket(type(Path())):
    """The server's socket path, knowing the server's pid."""

    def __new__(cls, path, server_pid):
        self = super().__new__(cls, path)
        self.server_pid = server_pid
        return self


@pytest.fixture
def server(tmp_path):
    sock = tmp_path / "w.sock"
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(sock), "60"], env=ENV)
    for _ in range(200):
        if sock.exists():
            break
        time.sleep(0.05)
    assert sock.exists(), "server did not start"
    yield Socket(sock, proc.pid)
    subprocess.run([sys.executable, "-m", "wandapp.warm", "stop", str(sock)], env=ENV, check=True)
    assert proc.wait(timeout=30) == 0
    assert not sock.exists()


def client(sock, *args, cwd=None, **env):
    return subprocess.run([sys.executable, "-m", "wandapp.warm", "run", str(sock), "--", *args], cwd=cwd,
                          env={**ENV, **env}, capture_output=True, text=True, timeout=300)


def cold(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "wandapp", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=300)


def test_a_job_through_the_server_prints_and_exits_as_the_cold_command(server, tmp_path):
    for args in (["--version"], ["ppl", "--model", "no/such/folder/", "--output", "x.json"], ["nosuchcommand"]):
        warm, plain = client(server, *args, cwd=tmp_path), cold(*args, cwd=tmp_path)
        assert (warm.returncode, warm.stdout, warm.stderr) == (plain.returncode, plain.stdout, plain.stderr), args
    assert client(server, "--version").stdout.startswith("wandapp ")


def test_the_job_runs_in_the_clients_folder_and_environment(server, tmp_path, tiny_llama_dir, data_dir):
    args = ["ppl", "--model", str(tiny_llama_dir), "--seqlen", "32", "--max-windows", "2", "--data-dir",
            str(data_dir), "--output", "ppl.json"]
    warm = client(server, *args, cwd=tmp_path, OMP_NUM_THREADS="1", WANDAPP_JOB_LOG="1")
    assert warm.returncode == 0, warm.stderr
    assert "wandapp ppl: start" in warm.stderr and "wandapp ppl: end" in warm.stderr  # WANDAPP_JOB_LOG reached it
    assert "wandapp warm: job cpu " in warm.stderr
    (tmp_path / "cold").mkdir()
    assert cold(*args, cwd=tmp_path / "cold").returncode == 0
    warm_out, cold_out = (json.loads((d / "ppl.json").read_text()) for d in (tmp_path, tmp_path / "cold"))
    assert warm_out["ppl"] == cold_out["ppl"] and warm_out["tokens"] == cold_out["tokens"]


def test_without_a_server_the_client_runs_the_command_cold(tmp_path):
    r = client(tmp_path / "none.sock", "--version")
    assert r.returncode == 0 and r.stdout == cold("--version").stdout


def test_killing_the_client_ends_its_job(server, tmp_path, tiny_llama_dir):
    # The job blocks opening its evaluation text (a FIFO nobody writes) until it is killed.
    (tmp_path / "data" / "wikitext2" / "raw").mkdir(parents=True)
    os.mkfifo(tmp_path / "data" / "wikitext2" / "raw" / "test.txt")
    proc = subprocess.Popen([sys.executable, "-m", "wandapp.warm", "run", str(server), "--", "ppl", "--model",
                             str(tiny_llama_dir), "--seqlen", "32", "--data-dir", str(tmp_path / "data"), "--output",
                             str(tmp_path / "ppl.json")], env=ENV, cwd=tmp_path)
    deadline = time.time() + 120
    while time.time() < deadline and not (jobs := _children(server.server_pid)):
        time.sleep(0.2)
    assert jobs, "the job never started"
    time.sleep(2)
    assert proc.poll() is None  # still blocked
    proc.terminate()
    proc.wait(timeout=30)
    deadline = time.time() + 30
    while time.time() < deadline and _children(server.server_pid):
        time.sleep(0.2)
    assert not _children(server.server_pid)


def _children(parent: int) -> list[int]:
    """Live (not zombie) children of `parent`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found
