"""The Optuna study in a real PostgreSQL server (Debian's package, started here on loopback), Tune elsewhere."""
import contextlib
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from pdsearch.run.directory import load_run

from configs import tiny_config


def pg_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    path = found[-1] if found else shutil.which("initdb")
    return os.path.dirname(path) if path else None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A PostgreSQL server of the test's own, on loopback, that a test may crash and start again."""

    def __init__(self, bin_dir: str) -> None:
        self.bin_dir, self.home = bin_dir, tempfile.mkdtemp(prefix="pdsearch-pg-")
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # it refuses root
        if self.as_postgres:
            shutil.chown(self.home, "postgres")
        self.data, self.port = os.path.join(self.home, "data"), free_port()
        self.url = f"postgresql+psycopg2://pdsearch@127.0.0.1:{self.port}/postgres"
        self._run("initdb", "-D", self.data, "-U", "pdsearch", "--auth=trust")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_postgres, f"{self.bin_dir}/{tool}", *args], check=True, capture_output=True,
                       text=True, timeout=120)

    def start(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.home, "server.log"), "-w", "start",
                  "-o", f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1")

    def crash(self) -> None:
        """As a server that dies: no clean shutdown."""
        self._run("pg_ctl", "-D", self.data, "-m", "immediate", "stop")


@pytest.fixture(scope="module")
def postgres():
    bin_dir = pg_bin()
    if bin_dir is None:
        message = "PostgreSQL is not installed (.ci/run installs Debian's postgresql package)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = Server(bin_dir)
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.crash()
        shutil.rmtree(server.home, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_url(postgres):
    return postgres.url


@pytest.mark.slow  # (20 s: the default run stays under 5 minutes; CI runs it with the slow ones)
def test_search_with_the_study_in_postgres(ray_session, postgres_url, tmp_path):
    from pdsearch.searching.driver import run_search

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
    assert len(result.trials) == 6
    # and pdsearch can rebuild the run from the database alone
    rebuilt = load_run(tmp_path / "run", source="study").trials
    assert sorted(rebuilt["trial_id"]) == sorted(result.trials["trial_id"])


def cli(*argv: str) -> subprocess.Popen:
    """The CLI in its own process, as a user runs it: its terminal output is what the test reads."""
    return subprocess.Popen([sys.executable, "-m", "pdsearch", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def cli_search(cfg, run_dir: Path) -> subprocess.Popen:
    config = run_dir.parent / f"{run_dir.name}.yaml"
    config.write_text(cfg.to_yaml())
    return cli("search", str(config), "--run-dir", str(run_dir))


def rows_in(csv: Path) -> int:
    return max(0, len(csv.read_text().splitlines()) - 1) if csv.exists() else 0


def wait_for_rows(csv: Path, count: int, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while rows_in(csv) < count:
        assert process.poll() is None and time.time() < deadline, "the search ended or stalled before the outage"
        time.sleep(0.2)


def study_trials(url: str, name: str) -> list:
    return [t for t in optuna.load_study(study_name=name, storage=url).trials if "repeat_of" not in t.user_attrs]


def outage_config(url: str, name: str, **search):
    return tiny_config(search={"num_trials": 10, "population_size": 4, "storage": url, "study_name": name, **search},
                       finetune={"epochs": 3})


@pytest.mark.slow
def test_a_short_outage_is_ridden_through_quietly_and_nothing_is_lost(postgres, tmp_path):
    run_dir = tmp_path / "run"
    search = cli_search(outage_config(postgres.url, "short"), run_dir)
    try:
        wait_for_rows(run_dir / "trials.csv", 3, search)
        postgres.crash()
        time.sleep(15)
    finally:
        postgres.start()
    out, _ = search.communicate(timeout=400)
    assert search.returncode == 0, out[-3000:]
    assert "Traceback" not in out and "OperationalError" not in out and "StorageInternalError" not in out, out[-3000:]
    lines = out.splitlines()
    down = [line for line in lines if "study database unreachable since" in line]
    back = [line for line in lines if "study database reconnected after" in line]
    assert len(down) == 1 and len(back) == 1 and "results written late" in back[0], out[-3000:]
    trials = pd.read_csv(run_dir / "trials.csv", dtype={"trial_id": str})
    assert (trials["status"] != "infeasible").sum() == 10 and trials["trial_id"].is_unique
    told = study_trials(postgres.url, "short")
    assert all(t.state.is_finished() for t in told), [t.state for t in told]
    by_id = [t.user_attrs["tune_trial_id"] for t in told if "tune_trial_id" in t.user_attrs]
    assert sorted(by_id) == sorted(trials.loc[trials["status"] != "infeasible", "trial_id"])  # each once
    assert "study in postgresql+psycopg2://pdsearch@" in out and "study.db" not in out  # says only what is true


@pytest.mark.slow
def test_a_long_outage_stops_cleanly_and_resume_completes_the_search(postgres, tmp_path):
    run_dir = tmp_path / "run"
    search = cli_search(outage_config(postgres.url, "long", storage_timeout=8), run_dir)
    try:
        wait_for_rows(run_dir / "trials.csv", 2, search)
        postgres.crash()
        out, _ = search.communicate(timeout=300)
    finally:
        postgres.start()
    assert search.returncode == 75, out[-3000:]  # outage.STORAGE_EXIT
    assert "Traceback" not in out, out[-3000:]
    assert f"pdsearch resume {run_dir}" in out and "storage_timeout" in out
    stopped_at = rows_in(run_dir / "trials.csv")
    resumed = cli("resume", str(run_dir))
    out, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0 and "Traceback" not in out, out[-3000:]
    trials = pd.read_csv(run_dir / "trials.csv", dtype={"trial_id": str})
    ran = trials[trials["status"] != "infeasible"]
    assert len(ran) == 10 >= stopped_at and trials["trial_id"].is_unique, trials[["trial_id", "status", "gpr", "pd"]]
    told = study_trials(postgres.url, "long")
    assert all(t.state.is_finished() for t in told)
    by_id = [t.user_attrs["tune_trial_id"] for t in told if "tune_trial_id" in t.user_attrs]
    assert sorted(by_id) == sorted(trials.loc[trials["status"] != "infeasible", "trial_id"])
