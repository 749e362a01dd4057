"""One GPU per concurrent job, on CPU with fake device ids: `wandapp gpu-slot` gives N concurrent jobs N distinct
ids, and a job that fails or is killed (SIGKILL) frees its id."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wandapp.gpuslots import claim, visible_devices

REPO = Path(__file__).resolve().parents[1]
# The job: print the GPU it was given, then hold it until killed (or for `hold` seconds).
JOB = "import os, sys, time; print(os.environ.get('CUDA_VISIBLE_DEVICES', '-'), flush=True); time.sleep({hold})"


def start_job(slots, gpus, hold=60, env=None):
    cmd = [sys.executable, "-m", "wandapp", "gpu-slot", "--gpus", str(gpus), "--dir", str(slots), "--",
           sys.executable, "-c", JOB.format(hold=hold)]
    base = {k: v for k, v in os.environ.items() if k not in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES")}
    env = {**base, "PYTHONPATH": str(REPO), **(env or {})}
    # its own process group: killing the job kills the wrapper and its command, as a scheduler does
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def kill_job(job):
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()


def test_concurrent_jobs_get_distinct_ids_and_a_killed_job_frees_its_id(tmp_path):
    jobs = [start_job(tmp_path, 3) for _ in range(3)]
    try:
        ids = [job.stdout.readline().strip() for job in jobs]
        assert sorted(ids) == ["0", "1", "2"]
        waiting = start_job(tmp_path, 3)  # a fourth job waits: every id is taken
        time.sleep(3)
        assert waiting.poll() is None
        victim = jobs[ids.index("1")]
        kill_job(victim)
        assert waiting.stdout.readline().strip() == "1"  # SIGKILL left no lock behind
        jobs.append(waiting)
    finally:
        for job in jobs:
            if job.poll() is None:
                kill_job(job)
    log = victim.stderr.read()
    assert "gpu-slot: slot 1 of 3, CUDA_VISIBLE_DEVICES=1 start " in log


def test_a_failed_job_frees_its_id_and_passes_its_exit_status(tmp_path):
    cmd = [sys.executable, "-m", "wandapp", "gpu-slot", "--gpus", "1", "--dir", str(tmp_path), "--",
           sys.executable, "-c", "import sys; sys.exit(3)"]
    done = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert done.returncode == 3 and "exit 3" in done.stderr
    slot, fd = claim(tmp_path, 1, timeout_s=0)
    assert slot == 0
    os.close(fd)


def test_the_command_keeps_its_id_when_only_the_wrapper_dies(tmp_path):
    job = start_job(tmp_path, 1)
    assert job.stdout.readline().strip() == "0"
    os.kill(job.pid, signal.SIGKILL)  # the wrapper alone; its command still runs on the GPU
    job.wait()
    with pytest.raises(TimeoutError):
        claim(tmp_path, 1, poll_s=0.1, timeout_s=0.5)
    os.killpg(job.pid, signal.SIGKILL)  # now the command too
    time.sleep(0.5)
    slot, fd = claim(tmp_path, 1, poll_s=0.1, timeout_s=10)
    assert slot == 0
    os.close(fd)


def test_slurm_jobs_pass_through_untouched(tmp_path):
    job = start_job(tmp_path / "slots", 2, hold=0, env={"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "3"})
    out, err = job.communicate(timeout=60)
    assert out.strip() == "3" and "SLURM job 42" in err and not (tmp_path / "slots").exists()


def test_ids_map_into_an_inherited_device_list():
    assert visible_devices(1, "4,5,6") == "5" and visible_devices(2, None) == "2"
    with pytest.raises(ValueError):
        visible_devices(3, "4,5,6")


def test_in_process_claims_are_distinct_while_held(tmp_path):
    held = [claim(tmp_path, 4, timeout_s=0) for _ in range(4)]
    assert sorted(s for s, _ in held) == [0, 1, 2, 3]
    os.close(held[2][1])
    assert claim(tmp_path, 4, timeout_s=0)[0] == held[2][0]


def test_workflow_wraps_gpu_rules_only_when_gpus_are_shared_out():
    from test_workflow import dry_run, job_counts

    shared = dry_run("--configfile", "workflow/configs/paper.yaml", "--config", "gpus=2", "-p")
    assert shared.returncode == 0, shared.stderr + shared.stdout
    for command in ("prune", "ppl", "tasks"):
        assert f"gpu_slot wandapp {command} " in shared.stdout
    assert "gpu_slot wandapp convert" not in shared.stdout and "gpu_slot wandapp calibrate" not in shared.stdout
    plain = dry_run("--configfile", "workflow/configs/paper.yaml", "-p")
    assert job_counts(plain.stdout) == job_counts(shared.stdout)


def test_a_job_logs_its_start_end_and_device(tiny_llama_dir, tmp_path, capsys, monkeypatch):
    from wandapp.cli import main

    monkeypatch.setenv("WANDAPP_JOB_LOG", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert main(["convert", "--model", str(tiny_llama_dir), "--output", str(tmp_path / "m")]) == 0
    err = capsys.readouterr().err
    assert "wandapp convert: start 20" in err and "CUDA_VISIBLE_DEVICES=1" in err and "wandapp convert: end 20" in err
    monkeypatch.delenv("WANDAPP_JOB_LOG")
    main(["convert", "--model", str(tiny_llama_dir), "--output", str(tmp_path / "n")])
    assert "start" not in capsys.readouterr().err


def test_gpu_slot_starts_without_torch(tmp_path):
    """The wrapper runs before every GPU job: the CLI dispatch imports only its module (no torch, no transformers)."""
    code = ("import sys; from wandapp.cli import main; "
            f"rc = main(['gpu-slot', '--gpus', '2', '--dir', {str(tmp_path)!r}, '--', 'true']); "
            "heavy = [m for m in ('torch', 'transformers', 'numpy', 'wandapp.methods') if m in sys.modules]; "
            "print('heavy:', heavy, 'slot module:', 'wandapp.commands.gpu_slot' in sys.modules); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "heavy: [] slot module: True" in done.stdout
    # -X importtime lists `import` statements (not importlib.import_module): the slot code, and no torch below it
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time")]
    assert "wandapp.gpuslots" in imported and "torch" not in imported and "transformers" not in imported
    # the full parser (help, other commands) still lists every subcommand
    from wandapp.cli import build_parser

    choices = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert {"prune", "ppl", "gpu-slot"} <= set(choices)
