"""Every address a search is given, checked on the driver before anything is written or started.

The run directory must be a path (``files.local_folder``, checked where it is read); the
Optuna study's database must answer with these credentials; Ray Tune's storage must be a
filesystem pyarrow can open (Tune opens it the same way, but only once trials have
started); each tracker's URI must be one the installed tracker accepts and can reach.
Each failure is one line naming the address and what works instead.
"""
from __future__ import annotations

from pathlib import Path

from pdsearch.catalog.trackers import TRACKERS
from pdsearch.config import SearchConfig
from pdsearch.errors import PdsearchError
from pdsearch.files import URL, native_output_silenced
from pdsearch.registry import resolve
from pdsearch.run.directory import study_storage


def check_addresses(cfg: SearchConfig, run_dir: Path) -> None:
    if cfg.search.storage is not None:  # a database server: reachable, with these credentials
        study_storage(cfg, run_dir)
    check_tune_storage(cfg.search.tune_storage)
    for name in cfg.search.trackers:
        resolve(TRACKERS[name].session).check(cfg, run_dir)


def check_tune_storage(uri: str | None) -> None:
    """A ``scheme://`` storage that pyarrow (Ray Tune's filesystem layer) cannot open or read, named with why."""
    if uri is None or not URL.match(uri):
        return  # a local or shared folder: Tune creates it
    import pyarrow.fs

    try:
        with native_output_silenced((1, 2)):  # libhdfs and the AWS SDK print from C++ as they fail
            filesystem, path = pyarrow.fs.FileSystem.from_uri(uri)
            filesystem.get_file_info(path)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PdsearchError(f"search.tune_storage {uri!r} cannot be opened ({reason[:160]}): install what its "
                            "filesystem needs (pyarrow's S3 or GCS support, libhdfs), give it credentials, or leave "
                            "search.tune_storage unset (RUN_DIR/tune)") from None
