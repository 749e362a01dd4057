"""Atomic writes (wandapp/io.py): a path that looks finished is always complete, an existing output survives a
failed or killed replacement, and a CLI run killed by SIGKILL leaves the previous output as it was."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wandapp.io import MARKER, atomic_dir, atomic_file, read_json, write_json

REPO = Path(__file__).resolve().parents[1]


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def tree(folder: Path) -> dict[str, bytes]:
    """Files under `folder` and their bytes, wandapp's output marker left out."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MARKER}


# ---------------------------------------------------------------- atomic_file

def test_atomic_file_replaces_an_existing_file_only_on_success(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old")
    with atomic_file(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"  # the final path is untouched while the new content is written
        assert tmp.parent == tmp_path and tmp.name.startswith(".result.json.")
    assert target.read_text() == "new"
    assert (target.stat().st_mode & 0o777) == 0o644
    assert entries(tmp_path) == ["result.json"]


def test_atomic_file_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "old" and entries(tmp_path) == ["result.json"]


def test_write_json_creates_parents_and_round_trips(tmp_path):
    target = tmp_path / "a" / "b" / "r.json"
    write_json(target, {"x": 1})
    assert target.read_text() == '{\n  "x": 1\n}\n' and entries(target.parent) == ["r.json"]
    assert read_json(target) == {"x": 1}


# ---------------------------------------------------------------- atomic_dir

def test_atomic_dir_replaces_an_existing_output(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_text("old")
    (target / MARKER).write_text("")  # written by an earlier wandapp run: replaceable
    with atomic_dir(target) as tmp:
        (tmp / "new.bin").write_text("new")
        assert tree(target) == {"old.bin": b"old"}
    assert tree(target) == {"new.bin": b"new"}
    assert (target.stat().st_mode & 0o777) == 0o755
    assert entries(tmp_path) == ["model"]  # no .model.tmp-* or .model.old-* left behind


def test_atomic_dir_failure_between_the_renames_puts_the_old_output_back(tmp_path, monkeypatch):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_text("old")
    (target / MARKER).write_text("")  # written by an earlier wandapp run: replaceable
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the old output is aside, the new one not yet in place
            raise OSError("disk gone")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="disk gone"):
        with atomic_dir(target) as tmp:
            (tmp / "new.bin").write_text("new")
    monkeypatch.undo()
    assert len(calls) == 3 and calls[2][1] == target  # the third rename puts the old output back
    assert tree(target) == {"old.bin": b"old"} and entries(tmp_path) == ["model"]


KILL_AT = """
import os, signal, sys
from pathlib import Path
real, target = os.replace, str(Path(sys.argv[1]))
def replace(src, dst):
    if {condition}:
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
os.replace = replace
"""


def run_killed(tmp_path, condition: str, body: str, *args) -> subprocess.CompletedProcess:
    script = tmp_path / "killed.py"
    script.write_text(KILL_AT.format(condition=condition) + textwrap.dedent(body))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(script), *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=300)


def test_kill_between_the_two_renames_leaves_nothing_that_looks_finished(tmp_path):
    target = tmp_path / "out" / "model"
    target.mkdir(parents=True)
    (target / "old.bin").write_text("old")
    (target / MARKER).write_text("")  # written by an earlier wandapp run: replaceable
    proc = run_killed(tmp_path, "str(dst) == target", """
        from wandapp.io import atomic_dir
        with atomic_dir(target) as tmp:
            (tmp / "new.bin").write_text("new")
    """, target)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not target.exists()  # no finished-looking output, and the previous one is kept aside, whole
    old = [p for p in target.parent.iterdir() if p.name.startswith(".model.old-")]
    new = [p for p in target.parent.iterdir() if p.name.startswith(".model.tmp-")]
    assert len(old) == 1 and tree(old[0]) == {"old.bin": b"old"}
    assert len(new) == 1 and tree(new[0]) == {"new.bin": b"new"}


def test_kill_while_writing_a_file_keeps_the_old_file(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    proc = run_killed(tmp_path, "False", """
        from wandapp.io import atomic_file
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            os.kill(os.getpid(), signal.SIGKILL)
    """, target)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".r.json.")]  # only a hidden temp remains


@pytest.mark.parametrize("kill_at", ["first rename", "second rename"])
def test_prune_killed_by_sigkill_keeps_the_previous_output(tiny_llama_dir, data_dir, tmp_path, kill_at):
    """`wandapp prune` over an existing output, killed (SIGKILL) as it moves the old output aside or as it puts
    the new one in place: the output path holds the complete previous output, or nothing."""
    target = tmp_path / "pruned"
    target.mkdir()
    (target / "prune_report.json").write_text('{"previous": true}')
    (target / MARKER).write_text("")  # a previous wandapp output, which a new run may replace
    before = tree(target)
    condition = "str(src) == target" if kill_at == "first rename" else "str(dst) == target"
    proc = run_killed(tmp_path, condition, """
        from wandapp.cli import main
        main(sys.argv[2:])
    """, target, "prune", "--model", tiny_llama_dir, "--method", "wanda", "--sparsity", "2:4", "--nsamples", "2",
        "--seqlen", "16", "--device", "cpu", "--data-dir", data_dir, "--output", target)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    if kill_at == "first rename":
        assert tree(target) == before
    else:
        assert not target.exists()
        (old,) = [p for p in tmp_path.iterdir() if p.name.startswith(".pruned.old-")]
        assert tree(old) == before
    (new,) = [p for p in tmp_path.iterdir() if p.name.startswith(".pruned.tmp-")]
    assert {"prune_report.json", "config.json"} <= set(tree(new))  # the new output was complete, never published


@pytest.mark.parametrize("crash", [True, False])
def test_bench_keeps_partial_results_off_its_final_path(tiny_llama_dir, tmp_path, monkeypatch, crash):
    """`wandapp bench` saves the linear tables before the end-to-end part; they go to a hidden .NAME.partial, so a
    crash there leaves no finished-looking bench.json, and a finished run leaves only bench.json."""
    import torch

    from wandapp import models
    from wandapp.cli import main
    from wandapp.sparse24 import runner

    def run_bench(model, shapes, device, on_partial=None, **kwargs):
        on_partial({"linear": [{"shape": [8, 8]}]})
        assert not out.exists()
        if crash:
            raise RuntimeError("end-to-end part crashed")
        return {"linear": [{"shape": [8, 8]}], "end_to_end": {}}

    out = tmp_path / "bench.json"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cusparselt, "is_available", lambda: True)
    monkeypatch.setattr(models, "load_model", lambda *a, **k: (None, None))
    monkeypatch.setattr(runner, "model_shapes", lambda model: [])
    monkeypatch.setattr(runner, "run_bench", run_bench)
    args = ["bench", "--model", str(tiny_llama_dir), "--device", "cuda", "--cutlass", "off", "--output", str(out)]
    if crash:
        with pytest.raises(RuntimeError, match="crashed"):
            main(args)
        assert not out.exists()
        assert (tmp_path / ".bench.json.partial").read_text().startswith('{\n  "linear"')
    else:
        assert main(args) == 0
        assert '"end_to_end"' in out.read_text() and entries(tmp_path) == ["bench.json"]


# ---------------------------------------------------------------- temporary siblings and output checks

def test_the_temp_tag_is_a_safe_host_name_and_this_pid(monkeypatch):
    from wandapp import io

    monkeypatch.setattr(io.socket, "gethostname", lambda: "GPU-node 7.cluster.example")
    assert io._tag() == f"GPU_node_7.{os.getpid()}"
    monkeypatch.setattr(io.socket, "gethostname", lambda: "")
    assert io._tag() == f"host.{os.getpid()}"


def test_atomic_dir_writes_in_a_hidden_sibling_named_for_this_run(tmp_path):
    from wandapp.io import _tag

    target = tmp_path / "new" / "deeper" / "model"
    with atomic_dir(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(f".model.tmp-{_tag()}-")
        (tmp / "w.bin").write_bytes(b"x")
    assert entries(target.parent) == ["model"] and tree(target) == {"w.bin": b"x"}


def test_stale_siblings_of_dead_runs_go_and_a_live_run_keeps_its_own(tmp_path):
    from wandapp.io import _tag, remove_stale_siblings

    host = _tag().split(".")[0]
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)  # exited: its pid is free (reuse within this test is vanishingly unlikely)
    live_dir = tmp_path / f".out.tmp-{host}.{os.getpid()}-abc"
    dead_dir = tmp_path / f".out.tmp-{host}.{dead}-def"
    dead_old = tmp_path / f".out.old-{host}.{dead}-0123"
    other = tmp_path / f".out.tmp-elsewhere.{dead}-ghi"  # another host's: its pid means nothing here
    for p in (live_dir, dead_dir, other):
        p.mkdir()
        (p / "f").write_text("x")
    dead_old.write_text("old")
    assert sorted(remove_stale_siblings(tmp_path / "out")) == sorted([dead_dir, dead_old])
    assert sorted(entries(tmp_path)) == sorted([live_dir.name, other.name])


def test_write_json_writes_paths_and_other_values_as_text(tmp_path):
    write_json(tmp_path / "r.json", {"model": tmp_path / "m", "n": 2})
    assert (tmp_path / "r.json").read_text() == f'{{\n  "model": "{tmp_path / "m"}",\n  "n": 2\n}}\n'


@pytest.mark.parametrize("make, folder, message", [
    ("dir", False, r"^--output {p} is a folder; name a file$"),
    ("file", False, r"^--output {p} is an existing file; pass --overwrite to replace it, or name a new path$"),
    ("dir", True, r"^--output {p} is a folder that wandapp did not write; pass --overwrite"),
])
def test_check_output_says_what_is_in_the_way(tmp_path, make, folder, message):
    import re

    from wandapp.errors import WandappError
    from wandapp.io import check_output

    p = tmp_path / "out"
    p.mkdir() if make == "dir" else p.write_text("x")
    if make == "dir":
        (p / "user-file").write_text("mine")
    with pytest.raises(WandappError, match=message.format(p=re.escape(str(p)))):
        check_output(p, folder=folder)
    assert sorted(entries(tmp_path)) == ["out"]  # the write probe left nothing behind


def test_check_output_names_why_a_folder_cannot_be_written(tmp_path, monkeypatch):
    from wandapp import io
    from wandapp.errors import WandappError

    def refuse(**kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(io.tempfile, "mkdtemp", refuse)
    with pytest.raises(WandappError, match=r"cannot write in .* \(Permission denied\)$"):
        io.check_output(tmp_path / "new" / "out.json", folder=False)


def test_liveness_and_removal_tolerate_what_other_runs_do(tmp_path, monkeypatch):
    """A pid that exists under another user counts as alive (its sibling stays); a sibling that another run
    removed first is not an error."""
    from wandapp import io

    def not_yours(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(io.os, "kill", not_yours)
    assert io._alive(12345) is True
    monkeypatch.undo()
    io._remove(tmp_path / "already-gone")
    io._remove(tmp_path / "already-gone-dir")
    assert entries(tmp_path) == []
