"""One process per run directory: `train`, `sweep` and `league` hold RUN_DIR/.marlscale.lock
for the run's whole life, so that a second `--resume` of the same run (or a second sweep into
the same folder) is refused instead of interleaving its iterations or re-running every trial.

The lock is the OS's own (`fcntl.flock` on the lock file, which Linux also honours on NFS
v4), so it dies with its process: a holder killed by SIGKILL, OOM or a lost node leaves no
lock behind, only the file, which names the pid and host that held it. The next process takes
the lock over and says whose it was. A refusal names the holder's pid and host in one line
(`RunDirInUse`, a ValueError: the CLI prints it and exits 2).

Object-store run directories (`s3://...`, marlscale/storage.py) cannot be locked this way:
there, one driver per URI is the user's to keep (docs/cluster.md).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from marlscale import runfiles


class RunDirInUse(ValueError):
    """Another live process holds the run directory's lock."""


def holder(run_dir: str | os.PathLike) -> dict | None:
    """What RUN_DIR's lock file says about its (last) holder: pid, host, command; None if
    there is no lock file or it cannot be read."""
    try:
        return json.loads((Path(run_dir) / runfiles.RUN_LOCK).read_text() or "null")
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def hold(run_dir: str | os.PathLike, command: str, log=None) -> Iterator[None]:
    """Within: this process holds RUN_DIR's lock (RUN_DIR is created if need be). Refused with
    RunDirInUse while another process holds it; a stale lock file (its process gone) is taken
    over, and `log` is told whose it was. The lock file is removed on exit, and so are the
    folders made for it if nothing was written in them."""
    run_dir = Path(run_dir)
    created = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / runfiles.RUN_LOCK
    fd = _lock(run_dir, path)
    try:
        stale = _read(fd)
        if stale and log is not None:
            log(f"marlscale: taking over the stale lock {path} of pid {stale.get('pid')} on "
                f"host {stale.get('host')!r} ({stale.get('command')}), which no longer holds "
                "it: that run ended without releasing it (killed or crashed)")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
            for folder in created:  # a run that wrote nothing leaves no folder behind
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if empty
    finally:
        os.close(fd)  # releases the lock


def _lock(run_dir: Path, path: Path) -> int:
    """An open descriptor of `path`, locked. A holder removes the file as it ends, so a lock
    won on a file that is no longer at `path` is worthless: then try again on the new one."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise RunDirInUse(_refusal(run_dir, path)) from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _read(fd: int) -> dict | None:
    try:
        text = os.pread(fd, 4096, 0).decode()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return {"pid": "?", "host": "?", "command": "unreadable lock file"}


def _refusal(run_dir: Path, path: Path) -> str:
    found = holder(run_dir) or {}
    who = (f"pid {found.get('pid', '?')} on host {found.get('host', '?')!r} "
           f"({found.get('command', '?')})") if found else "another process (it is starting)"
    return (f"run directory {str(run_dir)!r} is in use by {who}, which holds {path}; allowed: "
            "one process per run directory: wait for it to end, or stop it (Ctrl-C or SIGTERM "
            "checkpoints it) and resume")
