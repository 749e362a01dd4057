"""One GPU per concurrent job on one host: a slot allocator with one lock file per device id.

`claim(folder, count)` takes the lowest free id in 0..count-1 by an exclusive, non-blocking `fcntl.flock` on
`folder/gpu<id>.lock`, waiting while all are taken. The lock belongs to the open file, so it is released when the
holding process ends in any way: normal exit, a failure, SIGKILL. No stale lock files to clean up (the files stay;
only the lock matters). `wandapp gpu-slot` claims a slot, sets CUDA_VISIBLE_DEVICES for its command and hands the
open lock file to it, so the id stays taken while the command runs even if the wrapper itself is killed.

Locks are per host: the folder must be on the host the jobs run on (a local disk; NFS locks would also work, but
jobs on other hosts have other GPUs). Under SLURM (SLURM_JOB_ID set) the scheduler already gives each job its
own GPUs, and gpu-slot passes the command through untouched.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import os
import time
from pathlib import Path


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def claim(folder: str | os.PathLike, count: int, poll_s: float = 0.5, timeout_s: float | None = None) -> tuple[int, int]:  # noqa: E501
    """(slot id, open lock file descriptor): the lowest id not held by a live process; waits while all are held.

    Keep the descriptor open for as long as the slot is used; closing it (or the process ending) frees it."""
    if count < 1:
        raise ValueError(f"GPU slot count must be >= 1, got {count}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    while True:
        for slot in range(count):
            fd = os.open(folder / f"gpu{slot}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    continue
                raise
            os.ftruncate(fd, 0)  # who holds it, for people looking (the lock, not the text, decides)
            os.write(fd, f"pid {os.getpid()} since {utc_now()}\n".encode())
            return slot, fd
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"all {count} GPU slots in {folder} stayed taken for {timeout_s} s")
        time.sleep(poll_s)


def visible_devices(slot: int, inherited: str | None) -> str:
    """CUDA_VISIBLE_DEVICES for a slot: the slot-th entry of an inherited list (e.g. '4,5,6,7'), else the id."""
    if inherited:
        ids = [d.strip() for d in inherited.split(",") if d.strip()]
        if slot >= len(ids):
            raise ValueError(f"GPU slot {slot} but CUDA_VISIBLE_DEVICES={inherited!r} lists {len(ids)} devices")
        return ids[slot]
    return str(slot)
