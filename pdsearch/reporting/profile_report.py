"""``pdsearch sensitivity RUN_DIR``: the baseline's sensitivity profile, shown.

Computes the profile if the run has none yet (pdsearch.trial.profile), prints it,
and writes ``sensitivity.csv`` and ``sensitivity.png``; the report draws the same figure.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from pdsearch.errors import PdsearchError
from pdsearch.policy import SensitivityProfile
from pdsearch.run.directory import SENSITIVITY_CSV, SENSITIVITY_PNG, read_setup
from pdsearch.trial.baseline import cached_baseline
from pdsearch.trial.profile import cached_profile, compute_profile, save_profile


@dataclass
class SensitivityReport:
    profile: SensitivityProfile
    table: pd.DataFrame  # one row per group and rate
    csv: Path
    png: Path
    computed: bool  # False: read from the cache


def sensitivity(run_dir: str | Path) -> SensitivityReport:
    """The run's sensitivity profile (computed if missing), as sensitivity.csv and sensitivity.png."""
    run_dir, cfg, model = read_setup(run_dir)
    profile = cached_profile(cfg, run_dir)
    computed = profile is None
    if computed:
        baseline = cached_baseline(cfg, run_dir)
        if baseline is None:
            raise PdsearchError(f"{run_dir} has no trained baseline yet: the sensitivity profile is measured on it "
                                "(run the search first, or wait for its baseline)")
        profile = compute_profile(cfg, baseline)
        save_profile(cfg, profile, run_dir)
    positions = {layer["name"]: layer["position"] for layer in model["layers"]}
    table = profile_table(profile, positions)
    csv, png = run_dir / SENSITIVITY_CSV, run_dir / SENSITIVITY_PNG
    table.to_csv(csv, index=False)
    plot_profile(profile, positions, cfg.name).savefig(png, dpi=110)
    return SensitivityReport(profile, table, csv, png, computed)


def profile_table(profile: SensitivityProfile, positions: dict[str, float]) -> pd.DataFrame:
    increase = profile.increase()
    rows = []
    for g, name in enumerate(profile.groups):
        for r, rate in enumerate(profile.rates):
            rows.append({"group": name, "position": positions.get(name, np.nan), "rate": rate,
                         "accuracy": profile.accuracy[g][r], "loss": profile.loss[g][r],
                         "accuracy_drop": round(profile.base_accuracy - profile.accuracy[g][r], 4),
                         "loss_increase": round(float(increase[g][r]), 6)})
    return pd.DataFrame(rows)


def plot_profile(profile: SensitivityProfile, positions: dict[str, float], title: str) -> Figure:
    """Accuracy and loss increase vs rate, one curve per group, coloured by depth."""
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    acc_ax, loss_ax = fig.subplots(1, 2)
    colour = ScalarMappable(Normalize(0, 1), colormaps["viridis"])
    increase = profile.increase()
    for g, name in enumerate(profile.groups):
        c = colour.to_rgba(positions.get(name, 0.5))
        acc_ax.plot(profile.rates, profile.accuracy[g], marker="o", ms=3, color=c)
        loss_ax.plot(profile.rates, increase[g], marker="o", ms=3, color=c)
    acc_ax.axhline(profile.base_accuracy, color="black", ls=":", lw=1)
    acc_ax.set(xlabel="rate of the group pruned alone", ylabel="accuracy on held-out training data (%)",
               title=f"{title}: sensitivity ({profile.criterion}, BN re-estimated)")
    loss_ax.set(xlabel="rate of the group pruned alone", ylabel="loss increase (monotone)",
                title="what sensitivity allocation reads")
    for ax in (acc_ax, loss_ax):
        ax.grid(alpha=0.3)
    fig.colorbar(colour, ax=loss_ax, label="depth position (0 = input, 1 = output)")
    return fig


def describe(report: SensitivityReport) -> str:
    p = report.profile
    pivot = report.table.pivot(index="group", columns="rate", values="accuracy_drop").loc[p.groups]
    lines = [f"sensitivity profile ({'measured now' if report.computed else 'cached'}; criterion {p.criterion}, "
             f"baseline {p.base_accuracy:.2f}% on held-out training data): accuracy drop (points) by rate",
             pivot.to_string(float_format=lambda v: f"{v:.2f}"),
             f"written: {report.csv}\n         {report.png}"]
    return "\n".join(lines)
