"""The experiment trackers a search logs to (``search.trackers``), each declared once (light: config reads it).

A tracker names its session (``pdsearch.searching.tracking``) by import path and what it
needs installed. Adding one is a session class there plus one line here.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from pdsearch.errors import PdsearchError


@dataclass(frozen=True)
class Tracker:
    # import path of a class (cfg, run_dir) -> TrackerSession, whose classmethod check(cfg, run_dir) refuses, in the
    # preflight, an address or credentials the tracker would fail on
    session: str
    requires: str  # the module it imports
    extra: str  # the pdsearch extra that installs it

    def check_installed(self, name: str) -> None:
        if importlib.util.find_spec(self.requires) is None:
            raise PdsearchError(f"{name} needs {self.requires}, which is not installed: "
                                f'pip install -e ".[{self.extra}]"')


TRACKERS: dict[str, Tracker] = {
    "mlflow": Tracker("pdsearch.searching.tracking:MLflowSession", "mlflow", "mlflow"),
    "wandb": Tracker("pdsearch.searching.tracking:WandbSession", "wandb", "wandb"),
}
