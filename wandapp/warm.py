"""Warm start for the workflow's many short jobs on one machine (config `warm_start: true`).

Every `wandapp` job imports torch, transformers and lm-eval before any work: about 8-10 s of CPU a job on a 2-core
machine, the largest cost of the default workflow's quick jobs (docs/pruning-speed.md). The workflow starts one
server here that imports those libraries once; each job's `wandapp` is then a small client that hands its
arguments, working folder, environment and stdin/stdout/stderr to the server, which forks a child to run that one
command and sends back its exit code. The job is the same command with the same outputs: the child imports wandapp
itself from disk (the server never imports wandapp's modules, so an edit is seen by the next job), takes the job's
environment, thread count and temporary folder, and runs `wandapp.cli.main`.

    python -m wandapp.warm serve SOCKET [--idle S]     the server (the Snakefile's onstart starts it)
    python -m wandapp.warm stop SOCKET                 ask it to exit (onsuccess / onerror)
    python -m wandapp.warm run SOCKET -- ARGS...       one `wandapp ARGS...` through it; a cold start without it

Only this module's standard-library imports run in the client. The server forks before CUDA or any thread pool
starts; jobs that use a GPU still work (each child initialises CUDA itself), but the workflow turns warm start on
only for CPU runs by default. Killing the client (Snakemake cancelling a job) kills its child.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

# Imported once by the server: what every job's start-up spends its time on (see -X importtime in the docs).
PRELOAD = (
    "torch",
    "transformers",
    "transformers.models.llama.modeling_llama",
    "transformers.models.auto.modeling_auto",
    "safetensors.torch",
    "tqdm.auto",
    "lm_eval",
    "lm_eval.evaluator",
    "lm_eval.models.huggingface",
    "lm_eval.tasks",
)
_RC = struct.Struct("!i")
_STOP = b"stop"


def preload(modules=PRELOAD) -> None:
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:  # an extra that is not installed (lm-eval): its jobs import what they have
            pass


def serve(path: str, idle_s: float = 900.0) -> None:
    """Accept jobs on the Unix socket `path` until told to stop or idle for idle_s seconds; one child per job."""
    preload()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    server.settimeout(idle_s)
    children: set[int] = set()
    try:
        while True:
            try:
                conn, _ = server.accept()
            except socket.timeout:
                _reap(children)
                if not children:
                    return
                continue
            _reap(children)
            first = conn.recv(len(_STOP), socket.MSG_PEEK)
            if first == _STOP:
                conn.close()
                return
            pid = os.fork()
            if pid == 0:
                server.close()
                _child(conn)  # never returns
            children.add(pid)
            conn.close()
    finally:
        server.close()
        if os.path.exists(path):
            os.unlink(path)


def _reap(children: set[int]) -> None:
    for pid in list(children):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            children.discard(pid)


def _child(conn: socket.socket) -> None:
    """Run one job in this forked process: its fds, folder, environment and argv, then report the exit code."""
    code = 1
    try:
        request, fds = _receive(conn)
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        _take_job_settings()
        _watch_client(conn)
        code = _run(request["argv"])
        if os.environ.get("WANDAPP_JOB_LOG"):  # a workflow job's log, as runinfo.job_log's start/end lines
            _log_usage()
    except BaseException:  # noqa: BLE001 - a job must always answer its client
        import traceback

        traceback.print_exc()
    try:
        import atexit

        atexit._run_exitfuncs()  # what a cold start's interpreter exit runs; then no return into serve()
        sys.stdout.flush()
        sys.stderr.flush()
        conn.sendall(_RC.pack(code))
    finally:
        os._exit(code)


def _take_job_settings() -> None:
    """What a cold start would have read from the job's environment at import time."""
    import tempfile

    import torch

    tempfile.tempdir = None  # TMPDIR is the job's
    threads = os.environ.get("OMP_NUM_THREADS")  # Snakemake sets it to the rule's threads
    if threads and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _log_usage() -> None:
    """The job's CPU time and peak memory in its log: Snakemake's benchmark file measures only the client."""
    import resource

    use = resource.getrusage(resource.RUSAGE_SELF)
    print(f"wandapp warm: job cpu {use.ru_utime + use.ru_stime:.1f} s, max rss {use.ru_maxrss / 1024:.0f} MB "
          "(forked child; CPU counted from the fork)", file=sys.stderr)


def _watch_client(conn: socket.socket) -> None:
    """End this job when its client goes away (Snakemake killed the job): the client never writes again."""
    import threading

    def watch():
        try:
            conn.recv(1)
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


def _run(argv: list[str]) -> int:
    sys.argv = ["wandapp", *argv]
    from wandapp.cli import main

    try:
        return int(main(argv) or 0)
    except SystemExit as e:  # argparse's --help and usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    head, fds, _, _ = socket.recv_fds(conn, 8, 3)
    (size,) = struct.unpack("!Q", head)
    body = b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ConnectionError("client closed the connection mid-request")
        body += chunk
    return json.loads(body), list(fds)


def run(path: str, argv: list[str]) -> int:
    """The client: run `wandapp argv` through the server at `path`, or in this process when none answers."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        os.execv(sys.executable, [sys.executable, "-m", "wandapp", *argv])  # cold start, same command
    body = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    socket.send_fds(conn, [struct.pack("!Q", len(body))], [0, 1, 2])
    conn.sendall(body)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: os._exit(130))  # closing the socket ends the child (_watch_client)
    answer = b""
    while len(answer) < _RC.size:
        chunk = conn.recv(_RC.size - len(answer))
        if not chunk:
            print("wandapp: the warm-start server's job ended without an exit code", file=sys.stderr)
            return 1
        answer += chunk
    return _RC.unpack(answer)[0]


def stop(path: str) -> None:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(path)
            conn.sendall(_STOP)
    except OSError:
        pass  # not running (idle exit, or never started)


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "serve":
        idle = float(argv[3]) if len(argv) >= 4 and argv[2] == "--idle" else 900.0
        serve(argv[1], idle)
        return 0
    if len(argv) >= 2 and argv[0] == "stop":
        stop(argv[1])
        return 0
    if len(argv) >= 3 and argv[0] == "run" and argv[2] == "--":
        return run(argv[1], argv[3:])
    print(__doc__.split("\n\n")[2], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
