"""One writer per run directory: an advisory lock held for the whole of a command.

``search``, ``resume`` and ``select --export`` hold an ``flock`` on RUN_DIR/.pdsearch.lock,
whose text names the holder (host, pid, since when, what) for the message a second
driver gets. The kernel drops the lock when its process dies, however it dies, so a lock
left by a killed driver is simply taken over: ``resume`` after a SIGKILL works. The file
stays once a command has run in the folder (only a command that created it and was then
refused takes it away again), so drivers lock one file of that name.

Guarantees: on a local disk, a second process is always refused. On NFS, Linux emulates
flock with byte-range locks served by the NFS lock manager, so drivers on different hosts
exclude each other too (NFSv4, or v3 with lockd); where the filesystem refuses locks,
pdsearch says so in one line and goes on unguarded.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from typing import Iterator

from pdsearch.errors import PdsearchError

LOCK_FILE = ".pdsearch.lock"


def _holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def run_lock(run_dir: Path, purpose: str, create: bool = True) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block; a second holder gets a PdsearchError naming the first.

    Taken before anything in the run directory is read, so a second driver gets this
    message from the first second. A block that fails takes the lock file and folder it
    created with it (the folder only if nothing else was written there).
    ``create``: make the folder if it does not exist (a new search), else refuse.
    """
    run_dir = Path(run_dir)
    if not create and not run_dir.is_dir():
        raise PdsearchError(f"{run_dir} is not a pdsearch run directory (no such folder)")
    made_dir, made_file = not run_dir.exists(), not (run_dir / LOCK_FILE).exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise PdsearchError(f"run directory {run_dir} is not writable: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            h = _holder(fd)
            who = f"{h.get('purpose', 'another pdsearch')} (host {h.get('host', '?')}, pid {h.get('pid', '?')}, since {h.get('since', '?')})"
            raise PdsearchError(f"run directory {run_dir} is in use by {who}: wait for it to finish, "
                                "or use another --run-dir") from None
        except OSError as exc:  # a filesystem without locks
            print(f"pdsearch: note: cannot lock {run_dir} ({exc.strerror or exc}): nothing stops a second driver "
                  "from writing to it", file=sys.stderr)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "purpose": purpose,
              "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        try:
            yield
        except BaseException:  # what the lock made goes with it: a refused start leaves the folder as it was
            if made_file:
                (run_dir / LOCK_FILE).unlink(missing_ok=True)
            if made_dir and not any(run_dir.iterdir()):
                run_dir.rmdir()
            raise
        finally:
            if (run_dir / LOCK_FILE).exists():
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock
