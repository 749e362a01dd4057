"""Atomic writes and output safety: a finished-looking file or folder only ever appears complete, and wandapp
replaces only what it wrote itself (or what the user asked it to replace with --overwrite)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import WandappError

# mkstemp/mkdtemp create owner-only entries; results are shared on clusters, so open them up like a plain write.
FILE_MODE, DIR_MODE = 0o644, 0o755
# Written last into every folder atomic_dir finishes: only such a folder is replaced without --overwrite.
MARKER = ".wandapp-output"


def _tag() -> str:
    """host.pid of this process, in the names of its temporary siblings, so a later run can tell a dead run's."""
    host = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname().split(".")[0]) or "host"
    return f"{host}.{os.getpid()}"


_SIBLING = re.compile(r"\.(?:tmp|old)-(?P<host>[A-Za-z0-9_]+)\.(?P<pid>\d+)-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_stale_siblings(path: Path) -> list[Path]:
    """Remove the temporary siblings of `path` that a killed run of this host left behind (its pid is gone)."""
    host = _tag().split(".")[0]
    removed = []
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.iterdir():
        if not entry.name.startswith(f".{path.name}."):
            continue
        m = _SIBLING.match(entry.name, len(path.name) + 1)
        if m and m["host"] == host and not _alive(int(m["pid"])):
            _remove(entry)
            removed.append(entry)
    return removed


def is_wandapp_output(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and (path / MARKER).is_file()


def _replaceable(path: Path) -> bool:
    """A folder wandapp finished, or an empty folder: replacing it loses nothing of the user's."""
    return is_wandapp_output(path) or (path.is_dir() and not path.is_symlink() and not any(path.iterdir()))


def check_output(path: str | os.PathLike, *, folder: bool, overwrite: bool = False) -> Path:
    """Refuse, before any work, an --output that this run may not write: `.` or a folder above it, a path under
    a file or in a folder this user cannot write, a file or folder that wandapp did not write (without
    --overwrite), or a folder where a file is due. Writes nothing and removes nothing."""
    path = Path(path).expanduser()
    target = path.resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise WandappError(f"--output {path}: that is the current folder or one above it; name a new file or folder")
    nearest = target.parent
    while not nearest.exists():
        nearest = nearest.parent
    if not nearest.is_dir():
        raise WandappError(f"--output {path}: {nearest} is a file, not a folder")
    try:  # os.access says yes to root even on read-only mounts; creating and removing an entry is the real test
        os.rmdir(tempfile.mkdtemp(prefix=".wandapp-probe-", dir=nearest))
    except OSError as e:
        raise WandappError(f"--output {path}: cannot write in {nearest} ({e.strerror or e})") from None
    if not os.path.lexists(path):
        return path
    if not folder and path.is_dir():
        raise WandappError(f"--output {path} is a folder; name a file")
    if overwrite or (folder and _replaceable(path)):
        return path
    what = "a folder that wandapp did not write" if path.is_dir() else "an existing file"
    raise WandappError(f"--output {path} is {what}; pass --overwrite to replace it, or name a new path")


def _tmp_sibling(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{_tag()}-", dir=path.parent))
    os.chmod(tmp, DIR_MODE)
    return tmp


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON through a temporary file and an atomic rename."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it gets the marker and replaces `path` in one rename.

    An interrupted run leaves only a hidden `.NAME.tmp-HOST.PID-*` folder, never a `path` that looks finished;
    the next run that writes `path` removes it. What is at `path` is replaced only if wandapp wrote it, it is an
    empty folder, or `overwrite` is set (commands check this with check_output before any work, too). The old
    `path` is moved aside first and put back if the second rename fails; a kill between the two renames leaves no
    `path` and the previous output in `.NAME.old-HOST.PID-*` (removed by the next run that writes `path`).
    """
    path = Path(path)
    tmp = _tmp_sibling(path)
    old = None
    try:
        yield tmp
        (tmp / MARKER).write_text("written by wandapp; `--output` replaces a folder holding this file\n")
        if os.path.lexists(path):
            if not (overwrite or _replaceable(path)):
                raise WandappError(f"--output {path} appeared during the run and wandapp did not write it; "
                                   "left it as it was")
            old = path.with_name(f".{path.name}.old-{_tag()}-{os.urandom(4).hex()}")
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and os.path.lexists(old) and not os.path.lexists(path):  # failed between the renames
            os.replace(old, path)  # put the previous output back
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; it becomes `path` in one rename on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{_tag()}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
