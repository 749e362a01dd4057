"""`wandapp gpu-slot -- CMD`: run CMD on a GPU of its own (one lock file per device id, see wandapp.gpuslots)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "gpu-slot", help="run a command on a GPU no other concurrent job holds (sets CUDA_VISIBLE_DEVICES)",
        description="Claim the lowest free GPU id of this host (a flock on DIR/gpu<id>.lock, freed when the job ends "
                    "in any way, SIGKILL included), run CMD with CUDA_VISIBLE_DEVICES set to it, and log the id, the "
                    "start and end times and the exit status. Under SLURM (SLURM_JOB_ID set) CMD runs as it is.")
    p.add_argument("--gpus", type=int, required=True, help="number of GPUs on this host to share out (ids 0..N-1)")
    p.add_argument("--dir", required=True, help="folder of the lock files (the workflow uses RESULTS/.gpu-slots)")
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds of waiting")
    p.add_argument("cmd", nargs="+", metavar="-- CMD", help="the command; a leading `wandapp` runs this wandapp")
    p.set_defaults(func=run)


def run(args) -> None:
    import os
    import signal
    import subprocess
    import sys

    from ..errors import WandappError
    from ..gpuslots import claim, utc_now, visible_devices

    cmd = list(args.cmd)
    if cmd[0] == "wandapp":  # the same interpreter and package as this wrapper (a shell function may stand for it)
        cmd = [sys.executable, "-m", "wandapp", *cmd[1:]]
    env = dict(os.environ)
    fds: tuple[int, ...] = ()
    if os.environ.get("SLURM_JOB_ID"):
        note = f"SLURM job {os.environ['SLURM_JOB_ID']}: its own GPUs"
    else:
        if args.gpus < 1:
            raise WandappError("--gpus must be >= 1")
        try:
            slot, fd = claim(args.dir, args.gpus, timeout_s=args.timeout)
            env["CUDA_VISIBLE_DEVICES"] = visible_devices(slot, os.environ.get("CUDA_VISIBLE_DEVICES"))
        except (TimeoutError, ValueError) as e:
            raise WandappError(str(e)) from None
        fds, note = (fd,), f"slot {slot} of {args.gpus}"
    log = sys.stderr
    print(f"gpu-slot: {note}, CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', '')} start {utc_now()} "
          f"pid {os.getpid()}", file=log, flush=True)
    # The child inherits the lock's file: the id stays taken until the command ends, even if this wrapper dies.
    child = subprocess.Popen(cmd, env=env, pass_fds=fds)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: child.send_signal(s))
    rc = child.wait()
    print(f"gpu-slot: end {utc_now()} exit {rc}", file=log, flush=True)
    if rc:
        sys.exit(rc if rc > 0 else 128 - rc)
