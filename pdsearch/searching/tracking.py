"""Experiment tracker sessions: Ray Tune's logger callbacks, and the search's front as a parent run's artifacts.

Each trial is one tracker run, logged by Ray Tune's own callback (the policy the sampler
drew as parameters, its per-epoch and final metrics, named like the progress lines).
What Tune does not log is the search as a whole: a parent run, which every trial run
names, gets the Pareto front, trials.csv and the report when the search ends.
"""
from __future__ import annotations

import contextlib
import netrc
import os
import socket
from pathlib import Path
from urllib.parse import urlparse
from typing import TYPE_CHECKING, Any

from pdsearch.catalog.trackers import TRACKERS
from pdsearch.errors import PdsearchError
from pdsearch.registry import resolve

if TYPE_CHECKING:
    from pdsearch.config import SearchConfig
    from pdsearch.run.summary import SearchResult

ARTIFACTS = ("pareto.csv", "trials.csv", "report")  # of the parent run, from the run directory


def _artifacts(run_dir: Path) -> list[Path]:
    """The front, the trials and the report (written here for the tracker: the search itself writes none)."""
    from pdsearch.reporting.document import report

    report(run_dir)
    return [run_dir / name for name in ARTIFACTS if (run_dir / name).exists()]


class MLflowSession:
    """Trials as MLflow runs nested under one parent run per run directory (found again on resume by its tag).

    The tracking URI is ``search.tracking_uri``, else MLFLOW_TRACKING_URI, else a SQLite file
    in the run directory (MLflow 3 keeps its ./mlruns file store in maintenance mode).
    """

    @staticmethod
    def given_uri(cfg: SearchConfig) -> tuple[str | None, str]:
        """The tracking URI the user gave, and where: search.tracking_uri, else MLFLOW_TRACKING_URI."""
        if cfg.search.tracking_uri:
            return cfg.search.tracking_uri, "search.tracking_uri"
        return os.environ.get("MLFLOW_TRACKING_URI"), "MLFLOW_TRACKING_URI"

    @classmethod
    def check(cls, cfg: SearchConfig, run_dir: Path) -> None:
        """A store the installed MLflow refuses (file stores on MLflow >= 3), or a server that does not answer."""
        import mlflow
        from mlflow.tracking import MlflowClient

        uri, where = cls.given_uri(cfg)
        if not uri:
            return  # SQLite in the run directory
        works = f"sqlite:///{Path(run_dir).resolve()}/mlflow.db, or an MLflow server (http://HOST:PORT)"
        parsed = urlparse(uri)
        if parsed.scheme in ("", "file"):
            try:
                MlflowClient(uri)  # MLflow 3 refuses a new file store here, before writing anything
            except Exception as exc:
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0]
                raise PdsearchError(f"MLflow tracking URI {uri!r} ({where}) is refused by MLflow {mlflow.__version__} "
                                    f"({reason}): use {works}") from None
        elif parsed.scheme in ("http", "https"):
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            try:
                socket.create_connection((parsed.hostname, port), timeout=5).close()
            except OSError as exc:
                raise PdsearchError(f"MLflow tracking server {uri!r} ({where}) cannot be reached "
                                    f"({exc.strerror or exc}): start it, or use {works}") from None

    def __init__(self, cfg: SearchConfig, run_dir: Path) -> None:
        from mlflow.tracking import MlflowClient

        given, _ = self.given_uri(cfg)
        self.uri = given or f"sqlite:///{run_dir}/mlflow.db"
        # a store of our own keeps its artifacts beside it, not in ./mlruns of wherever the driver started
        artifacts = None if given else (run_dir / "mlruns").as_uri()
        self.client = MlflowClient(self.uri)
        experiment = self.client.get_experiment_by_name(cfg.name)
        self.experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
            cfg.name, artifact_location=artifacts)
        tag = f"tags.pdsearch.run_dir = '{run_dir}'"
        found = self.client.search_runs([self.experiment_id], filter_string=tag, max_results=1)
        self.parent = found[0].info.run_id if found else self.client.create_run(
            self.experiment_id, run_name=f"{cfg.name} (search)", tags={"pdsearch.run_dir": str(run_dir)}).info.run_id
        self.experiment_name = cfg.name

    def callback(self):
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        return MLflowLoggerCallback(tracking_uri=self.uri, experiment_name=self.experiment_name,
                                    tags={"mlflow.parentRunId": self.parent})

    def finish(self, run_dir: Path, summary: SearchResult) -> None:
        for path in _artifacts(run_dir):
            (self.client.log_artifacts if path.is_dir() else self.client.log_artifact)(self.parent, str(path), *(
                [path.name] if path.is_dir() else []))
        self.client.log_metric(self.parent, "front_size", len(summary.front))
        self.client.set_terminated(self.parent)


class WandbSession:
    """Trials as W&B runs grouped by the run directory's name; one more run in the group holds the front.

    WANDB_MODE=offline keeps everything under RUN_DIR/wandb (``wandb sync`` uploads it later).
    """

    @classmethod
    def check(cls, cfg: SearchConfig, run_dir: Path) -> None:
        """Online mode (W&B's default) needs credentials: an API key, or ``wandb login``'s netrc entry."""
        if os.environ.get("WANDB_MODE", "online") in ("offline", "disabled", "dryrun") or os.environ.get("WANDB_API_KEY"):
            return
        host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
        with contextlib.suppress(OSError, netrc.NetrcParseError):
            if netrc.netrc(os.environ.get("NETRC")).authenticators(host):
                return
        raise PdsearchError(f"W&B logs online (WANDB_MODE is {os.environ.get('WANDB_MODE', 'unset')}) and has no "
                            f"credentials for {host} (WANDB_API_KEY, or wandb login): set WANDB_MODE=offline to keep "
                            "the runs in RUN_DIR/wandb (wandb sync uploads them later), or log in")

    def __init__(self, cfg: SearchConfig, run_dir: Path) -> None:
        self.project, self.group, self.dir = cfg.name, f"{cfg.name}-{run_dir.name}", str(run_dir)

    def callback(self):
        from ray.air.integrations.wandb import WandbLoggerCallback

        # the driver's WANDB_MODE rides along: the logging actors' processes may predate it
        mode = {"mode": os.environ["WANDB_MODE"]} if os.environ.get("WANDB_MODE") else {}
        return WandbLoggerCallback(project=self.project, group=self.group, dir=self.dir, **mode)

    def finish(self, run_dir: Path, summary: SearchResult) -> None:
        import wandb

        run = wandb.init(project=self.project, group=self.group, job_type="front", dir=self.dir,
                         name=f"{self.group} (search)", settings=wandb.Settings(silent=True))
        artifact = wandb.Artifact(f"{self.group}-front", type="pareto-front")
        for path in _artifacts(run_dir):
            (artifact.add_dir if path.is_dir() else artifact.add_file)(str(path))
        run.log({"front_size": len(summary.front)})
        run.log_artifact(artifact)
        run.finish()
        wandb.teardown()  # waits for wandb's service to write the run out: the search may exit right after


def sessions(cfg: SearchConfig, run_dir: Path) -> list[Any]:
    """A session per tracker the config names (config checked each is installed)."""
    return [resolve(TRACKERS[name].session)(cfg, run_dir) for name in cfg.search.trackers]
