"""Files written whole or not at all: a reader (or a crash) never sees half a file; stderr kept clean."""
from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path
from typing import Iterator

from pdsearch.errors import PdsearchError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` when the block succeeds."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")  # s3://, gs://, hdfs://, http(s)://, any scheme://


def local_folder(path: str | Path, what: str = "run directory") -> Path:
    """``path`` as a local or shared (NFS) folder; a URL is refused, since pathlib would make it a folder named
    after the scheme (``s3:``) on this machine's disk."""
    if URL.match(str(path)):
        raise PdsearchError(f"{what} {str(path)!r} is a URL: it holds the lock, the SQLite study and the CSVs, so it "
                            "must be a local or shared (NFS) path; remote storage goes in search.tune_storage (Ray "
                            "Tune's experiment) and search.storage (the Optuna study)")
    return Path(path)


def writable(path: Path) -> Path:
    """``path`` with its folder created where missing; one line where it cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PdsearchError(f"cannot write {path}: {exc.strerror or exc}") from None
    if path.is_dir():
        raise PdsearchError(f"{path} is a folder: give a file name")
    if not os.access(path.parent, os.W_OK):
        raise PdsearchError(f"cannot write {path}: permission denied")
    return path


@contextlib.contextmanager
def native_output_silenced(fds: tuple[int, ...] = (2,)) -> Iterator[None]:
    """Native code's writes to these file descriptors go nowhere: libraries that print from C++
    (Ray's client to stderr, the ONNX exporter its graph to stdout)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in fds]
    try:
        with open(os.devnull, "w") as devnull:
            for fd in fds:
                os.dup2(devnull.fileno(), fd)
            yield
    finally:
        for fd, copy in zip(fds, saved):
            os.dup2(copy, fd)
            os.close(copy)
