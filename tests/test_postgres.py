"""The Optuna study in a real PostgreSQL server (Debian's package, started here on loopback), Tune elsewhere."""
import glob
import os
import shutil
import subprocess
import tempfile

import optuna
import pandas as pd
import pytest

from conftest import tiny_config
from pdsearch.rundir import load_run


def pg_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    path = found[-1] if found else shutil.which("initdb")
    return os.path.dirname(path) if path else None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    bin_dir = pg_bin()
    if bin_dir is None:
        message = "PostgreSQL is not installed (.ci/run installs Debian's postgresql package)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    home = tempfile.mkdtemp(prefix="pdsearch-pg-")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # the server refuses root
    if as_postgres:
        shutil.chown(home, "postgres")
    data, port = os.path.join(home, "data"), free_port()
    run = lambda *cmd: subprocess.run([*as_postgres, *cmd], check=True, capture_output=True, text=True, timeout=120)  # noqa: E731
    run(f"{bin_dir}/initdb", "-D", data, "-U", "pdsearch", "--auth=trust")
    run(f"{bin_dir}/pg_ctl", "-D", data, "-l", os.path.join(home, "server.log"), "-w", "start",
        "-o", f"-p {port} -k {home} -c listen_addresses=127.0.0.1")
    try:
        yield f"postgresql+psycopg2://pdsearch@127.0.0.1:{port}/postgres"
    finally:
        run(f"{bin_dir}/pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow  # (20 s: the default run stays under 5 minutes; CI runs it with the slow ones)
def test_search_with_the_study_in_postgres(ray_session, postgres_url, tmp_path):
    from pdsearch.searching import run_search

    shared = tmp_path / "shared"  # stands for an NFS mount or s3:// bucket that Ray Tune writes to
    cfg = tiny_config(search={"num_trials": 6, "population_size": 4, "storage": postgres_url, "study_name": "pg-run",
                              "tune_storage": str(shared)})
    result = run_search(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "study.db").exists()  # the study lives in the database
    assert list((shared / cfg.name).glob("experiment_state-*.json")) and not (tmp_path / "run" / "tune").exists()
    # plain Optuna reads the front back from PostgreSQL
    study = optuna.load_study(study_name="pg-run", storage=postgres_url)
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE,
                                optuna.study.StudyDirection.MINIMIZE]
    front = pd.read_csv(tmp_path / "run" / "pareto.csv", dtype={"trial_id": str})
    # (a policy the sampler re-proposed is told its twin's result and names it in repeat_of)
    told = {t.user_attrs.get("tune_trial_id") or t.user_attrs["repeat_of"] for t in study.best_trials}
    assert told == set(front["trial_id"])
    assert len(result["trials"]) == 6
    # and pdsearch can rebuild the run from the database alone
    rebuilt = load_run(tmp_path / "run", source="study").trials
    assert sorted(rebuilt["trial_id"]) == sorted(result["trials"]["trial_id"])
