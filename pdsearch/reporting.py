"""Pareto reports: what a run found, as PNG plots, report.md and a self-contained report.html.

Plots use matplotlib's object API (no pyplot state, no display needed); report.html
shows the trade-off plots interactively (interactive.py, Plotly) and the rest as PNGs;
tables are pandas frames rendered to Markdown and HTML. A report can be made while the search
is still running or after it crashed: it shows the trials finished so far.
"""
from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pdsearch import interactive
from pdsearch.cost import human_count
from pdsearch.errors import PdsearchError
from pdsearch.objectives import OBJECTIVES
from pdsearch.profiling import cached_profile, plot_profile
from pdsearch.rundir import SENSITIVITY_PNG, Run, hypervolume, load_run
from pdsearch.space import SearchSpace
from pdsearch.tradeoff import cost_axes, cost_axis, envelope

PLOTS = {
    **{f"pareto_{name}.png": f"Accuracy vs {o.label}" for name, o in OBJECTIVES.items() if not o.constraint.evolves},
    "flops_vs_latency.png": "Measured latency reduction vs FLOPs reduction",
    "accuracy_vs_gpr.png": "Accuracy vs GPR (or budget) per pruning distribution",
    "rate_profiles.png": "Per-layer pruning rates of the Pareto policies",
    SENSITIVITY_PNG: "Sensitivity profile of the baseline (each group pruned alone)",
    "screening.png": "Screening accuracy (BatchNorm re-estimated) vs accuracy after fine-tuning",
}
MAX_PROFILES = 10  # rate profiles drawn (evenly spaced along the front)
Section = tuple[str, Union[str, pd.DataFrame, list[str]]]  # title, then text, a table or plot names


@dataclass
class Report:
    html: Path
    markdown: Path
    plots: dict[str, Path]
    hypervolume: float
    front: pd.DataFrame
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    note: str = ""  # why the study was read rather than trials.csv


def report(run_dir: str | Path, out: str | Path | None = None, source: str = "auto") -> Report:
    """Write report.html, report.md and the PNG plots of a run (finished or not) to ``out``."""
    run = load_run(run_dir, source)
    done = run.completed
    if not len(done):
        raise PdsearchError(f"{run.run_dir} has no completed trial yet: nothing to report")
    out = Path(out) if out else run.run_dir / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PdsearchError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    front = run.front()
    objectives = run.cfg.search.objectives
    hv = hypervolume(front, objectives, run.model["flops"], run.model["params"])

    figures = {
        **{f"pareto_{name}.png": _tradeoff(run, front, name) for name in cost_axes(run)},
        "accuracy_vs_gpr.png": _accuracy_vs_gpr(run),
        "rate_profiles.png": _rate_profiles(run, front),
    }
    interactive_figures = {f"pareto_{name}.png": interactive.tradeoff(run, front, name) for name in cost_axes(run)}
    if "latency_reduction_pct" in done.columns:
        figures["flops_vs_latency.png"] = _flops_vs_latency(run, front)
        interactive_figures["flops_vs_latency.png"] = interactive.flops_vs_latency(run, front)
    screening = screening_correlation(done)
    if screening:
        figures["screening.png"] = _screening(run, screening)
    profile = cached_profile(run.cfg, run.run_dir)
    if profile is not None:  # measured for a sensitivity allocation, or by pdsearch sensitivity
        positions = {layer["name"]: layer["position"] for layer in run.model["layers"]}
        figures[SENSITIVITY_PNG] = plot_profile(profile, positions, run.cfg.name)
    plots = {}
    for name, fig in figures.items():
        plots[name] = out / name
        fig.savefig(plots[name], dpi=110)

    tables = {"front": front_table(run, front), "best_per_pd": best_per_pd(run), "baseline": baseline_table(run)}
    if len(run.failed):
        tables["failed"] = run.failed[["trial_id", "gpr", "pd", "criterion", "status", "failure_reason"]]
    sections: list[Section] = [
        ("Summary", _summary(run, front, hv)),
        ("Trade-off", [name for name in plots if name not in (SENSITIVITY_PNG, "screening.png")]),
        (f"Pareto front ({len(front)} policies)", tables["front"]),
        (f"Best policy per PD at each {_amount_label(run)} (validation accuracy %, FLOPs reduction %)", tables["best_per_pd"]),
        ("Baseline", tables["baseline"]),
    ]
    if screening:
        sections.append(("How well the screening ranks the fine-tuned accuracy", _screening_text(screening)))
        sections.append(("Screening", ["screening.png"]))
    if SENSITIVITY_PNG in plots:
        sections.append(("Sensitivity profile", [SENSITIVITY_PNG]))
    if "failed" in tables:
        sections.append((f"Failed trials ({len(tables['failed'])})", tables["failed"]))
    title = f"pdsearch report: {run.cfg.name}"
    markdown, page = out / "report.md", out / "report.html"
    markdown.write_text(_markdown(title, sections))
    divs = {name: interactive.div(fig, f"plot-{Path(name).stem}") for name, fig in interactive_figures.items()}
    page.write_text(_html(title, sections, plots, divs))
    return Report(page, markdown, plots, hv, front, tables, run.note)


# ---- tables -------------------------------------------------------------------------------


def _human(n: float) -> str:
    return human_count(n, digits=2)


def _with_std(frame: pd.DataFrame, column: str, repeats: int) -> pd.Series:
    """'97.20 ± 0.31' where repeats were run, else '97.20'."""
    if repeats > 1 and f"{column}_std" in frame.columns:
        return frame[column].map("{:.2f}".format) + " ± " + frame[f"{column}_std"].map("{:.2f}".format)
    return frame[column].map("{:.2f}".format)


def front_table(run: Run, front: pd.DataFrame) -> pd.DataFrame:
    repeats = run.cfg.space.repeats
    return pd.DataFrame({
        "trial": front["trial_id"],
        **({"budget %": front["budget"].map("{:g}".format)} if run.cfg.space.budget else {}),
        "GPR %": front["gpr"].map("{:.4g}".format),
        "PD": front["pd"],
        "criterion": front["criterion"],
        "val acc %": _with_std(front, "accuracy", repeats),
        "test acc %": _with_std(front, "test_accuracy", repeats),
        "acc drop (pts)": _with_std(front, "acc_drop", repeats),
        "FLOPs": front["flops"].map(_human),
        "FLOPs red. %": front["flops_reduction_pct"].map("{:.1f}".format),
        "params": front["params"].map(_human),
        "params red. %": front["params_reduction_pct"].map("{:.1f}".format),
    })


def _amount_label(run: Run) -> str:
    """What the space searched: the GPR, or a FLOPs / params budget."""
    if run.cfg.space.budget is None:
        return "GPR"
    return f"{'FLOPs' if run.cfg.space.budget.metric == 'flops' else 'params'} budget"


def _gpr_bins(run: Run) -> pd.Series:
    """The GPR (or budget) as searched when the space is discrete, else rounded to 10-point bins."""
    column, searched = run.cfg.space.amount
    amount = run.completed[column]
    if searched.step or searched.values_ is not None:
        return amount
    return (amount / 10).round() * 10


def _best_per_gpr_and_pd(run: Run) -> pd.DataFrame:
    """The most accurate completed trial of each PD at each (binned) GPR."""
    done = run.completed.assign(gpr_bin=_gpr_bins(run))
    return done.loc[done.groupby(["gpr_bin", "pd"])["accuracy"].idxmax()].sort_values("gpr_bin")


def best_per_pd(run: Run) -> pd.DataFrame:
    best = _best_per_gpr_and_pd(run)
    best = best.assign(cell=best["accuracy"].map("{:.2f}".format) + " (−" + best["flops_reduction_pct"].map("{:.0f}".format) + "%)")
    table = best.pivot(index="gpr_bin", columns="pd", values="cell").fillna("")
    table.index = [f"{g:g}" for g in table.index]
    return table.rename_axis(f"{_amount_label(run)} %").reset_index()


def baseline_table(run: Run) -> pd.DataFrame:
    base = run.baseline or {}
    fmt = lambda key: f"{base[key]:.2f}" if key in base else "?"  # noqa: E731
    return pd.DataFrame([{
        "model": run.model["name"], "val acc %": fmt("val_accuracy"), "test acc %": fmt("test_accuracy"),
        "FLOPs": _human(run.model["flops"]), "params": _human(run.model["params"]),
        "source": base.get("source", "?"),
    }])


def _summary(run: Run, front: pd.DataFrame, hv: float) -> str:
    budget = SearchSpace(run.cfg).size()
    finished = len(run.trials)
    state = f"{finished} trials finished of {budget}"
    if finished < budget:
        state += " (partial run: still running, or stopped early)"
    objectives = run.cfg.search.objectives
    reference = {name: o.reference(run.model) for name, o in OBJECTIVES.items()}
    reference |= {"flops": f"FLOPs = baseline ({_human(run.model['flops'])})",
                 "params": f"params = baseline ({_human(run.model['params'])})"}
    return "\n".join([
        f"- Run: `{run.run_dir}` (read from {run.source})",
        f"- {state}: {len(run.completed)} completed, {len(run.stopped)} stopped early by the scheduler, "
        f"{len(run.failed)} failed or not buildable",
        f"- Objectives: {', '.join(objectives)}; constraints: {run.cfg.search.constraints.describe()}",
        f"- Pareto front: {len(front)} policies",
        f"- Hypervolume: **{hv:.4f}**, each objective as a loss in [0, 1] (1 − accuracy/100, cost / baseline cost); "
        f"reference point: {', '.join(reference[o] for o in objectives)}. 1.0 would be a perfectly accurate, free model.",
    ])


def screening_correlation(done: pd.DataFrame) -> dict[str, float]:
    """Spearman and Kendall rank correlations of the screening accuracy (BN re-estimated) and of the
    raw pruned accuracy with the accuracy after fine-tuning, over completed trials ({} if under 3)."""
    if len(done) < 3 or "accuracy_pruned" not in done.columns:
        return {}
    final = done["accuracy"].astype(float)
    out = {"n": float(len(done))}
    for name, column in (("screening", "accuracy_before_finetune"), ("raw", "accuracy_pruned")):
        values = done[column].astype(float)
        for method in ("spearman", "kendall"):
            out[f"{name}_{method}"] = float(values.corr(final, method=method))
    return out


def _screening_text(c: dict[str, float]) -> str:
    fmt = lambda v: "n/a (constant)" if pd.isna(v) else f"{v:.3f}"  # noqa: E731
    return "\n".join([
        f"- Over {int(c['n'])} completed trials, accuracy after BatchNorm re-estimation vs after fine-tuning: "
        f"Spearman **{fmt(c['screening_spearman'])}**, Kendall **{fmt(c['screening_kendall'])}**",
        f"- Raw pruned accuracy (no re-estimation) vs after fine-tuning: Spearman {fmt(c['raw_spearman'])}, "
        f"Kendall {fmt(c['raw_kendall'])}",
        "- 1 would mean the screening orders policies exactly as fine-tuning does; it is what MO-ASHA's rung 0 reads.",
    ])


# ---- plots --------------------------------------------------------------------------------


def _screening(run: Run, c: dict[str, float]) -> Figure:
    done = run.completed
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.subplots()
    ax.scatter(done["accuracy_pruned"], done["accuracy"], s=18, color="lightgrey", label="raw pruned accuracy")
    colours, _ = _colouring(done)
    ax.scatter(done["accuracy_before_finetune"], done["accuracy"], c=colours, s=30,
               label=f"after BN re-estimation (Spearman {c['screening_spearman']:.2f})")
    ax.set(xlabel="accuracy before fine-tuning (%)", ylabel="validation accuracy after fine-tuning (%)",
           title=f"{run.cfg.name}: screening vs fine-tuned accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def _colouring(trials: pd.DataFrame) -> tuple[list, list[Line2D] | ScalarMappable]:
    """One colour per row: by PD when there are few distinct ones, else by the shape's slope."""
    labels = trials["pd"].astype(str)
    names = sorted(labels.unique())
    if len(names) <= 10:
        palette = {name: colormaps["tab10"](i) for i, name in enumerate(names)}
        legend = [Line2D([], [], ls="", marker="o", color=palette[n], label=n) for n in names]
        return [palette[label] for label in labels], legend
    slope = trials["slope"].astype(float)
    mappable = ScalarMappable(Normalize(slope.min(), slope.max()), colormaps["viridis"])
    return [mappable.to_rgba(s) for s in slope], mappable


def _legend_or_bar(fig: Figure, ax, key: list[Line2D] | ScalarMappable, extra: list[Line2D]) -> None:
    if isinstance(key, ScalarMappable):
        fig.colorbar(key, ax=ax, label="distribution slope (− top-down, + bottom-up)")
        key = []
    ax.legend(handles=key + extra, fontsize=8, loc="best")


def _tradeoff(run: Run, front: pd.DataFrame, objective: str) -> Figure:
    done, axis = run.completed, cost_axis(run, objective)
    colours, key = _colouring(done)
    colours = np.asarray(colours)
    on_front = done.index.isin(front.index)
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.subplots()
    x = done[axis.metric].astype(float) / axis.scale
    ax.scatter(x[~on_front], done["accuracy"][~on_front], c=colours[~on_front], s=24, alpha=0.3)
    ax.scatter(x[on_front], done["accuracy"][on_front], c=colours[on_front], s=70,
               edgecolors="black", linewidths=0.9, zorder=3)
    if run.cfg.space.repeats > 1:
        ax.errorbar(x[on_front], done["accuracy"][on_front], yerr=done["accuracy_std"][on_front], fmt="none",
                    ecolor="grey", lw=0.8, zorder=2)
    seen = envelope(front, axis.metric)
    ax.step(seen[axis.metric].astype(float) / axis.scale, seen["accuracy"], where="post", color="black", lw=0.8, ls="--")
    extra = [Line2D([], [], ls="", marker="o", mfc="white", mec="black", label="Pareto front"),
             Line2D([], [], ls="", marker="o", color="grey", alpha=0.3, label="dominated or infeasible")]
    if run.baseline:
        ax.scatter([axis.baseline], [run.baseline["val_accuracy"]], marker="*", s=180, color="black", zorder=4)
        extra.append(Line2D([], [], ls="", marker="*", ms=10, color="black", label="baseline"))
    ax.set(xlabel=f"{axis.name} ({axis.unit})", ylabel="validation accuracy (%)",
           title=f"{run.cfg.name}: accuracy vs {axis.name}")
    ax.grid(alpha=0.3)
    _legend_or_bar(fig, ax, key, extra)
    return fig


def _flops_vs_latency(run: Run, front: pd.DataFrame) -> Figure:
    """Where fewer FLOPs did not mean faster: every completed trial, the diagonal for reference."""
    done = run.completed
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.subplots()
    colours, key = _colouring(done)
    ax.scatter(done["flops_reduction_pct"], done["latency_reduction_pct"].astype(float), c=colours, s=30)
    top = float(max(done["flops_reduction_pct"].max(), 1.0))
    ax.plot([0, top], [0, top], color="grey", ls=":", lw=1)
    device = done["latency_device"].iloc[0] if "latency_device" in done.columns else ""
    ax.set(xlabel="FLOPs reduction (%)", ylabel=f"measured latency reduction (%), {device}",
           title=f"{run.cfg.name}: FLOPs vs measured latency")
    ax.grid(alpha=0.3)
    _legend_or_bar(fig, ax, key, [Line2D([], [], color="grey", ls=":", label="latency falls as FLOPs do")])
    return fig


def _accuracy_vs_gpr(run: Run) -> Figure:
    done = run.completed
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.subplots()
    colours, key = _colouring(done)
    if isinstance(key, ScalarMappable):  # continuous shapes: every trial, coloured by slope
        ax.scatter(done[run.cfg.space.amount[0]], done["accuracy"], c=colours, s=30)
    else:
        palette = {h.get_label(): h.get_color() for h in key}
        for pd_label, best in _best_per_gpr_and_pd(run).groupby("pd"):
            yerr = best["accuracy_std"] if run.cfg.space.repeats > 1 else None
            ax.errorbar(best["gpr_bin"], best["accuracy"], yerr=yerr, marker="o", ms=5, capsize=3,
                        color=palette[str(pd_label)], label=str(pd_label))
    extra = []
    if run.baseline:
        ax.axhline(run.baseline["val_accuracy"], color="black", ls=":", lw=1)
        extra.append(Line2D([], [], color="black", ls=":", label="baseline"))
    ax.set(xlabel=f"{_amount_label(run)} (%)", ylabel="best validation accuracy (%)",
           title=f"{run.cfg.name}: accuracy vs {_amount_label(run)} per distribution")
    ax.grid(alpha=0.3)
    _legend_or_bar(fig, ax, key, extra)
    return fig


def _rate_profiles(run: Run, front: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.subplots()
    picks = front.iloc[np.unique(np.linspace(0, len(front) - 1, min(len(front), MAX_PROFILES)).round().astype(int))]
    layers = run.model["layers"]
    colours = colormaps["plasma"](np.linspace(0, 0.9, max(len(picks), 1)))
    for colour, (_, row) in zip(colours, picks.iterrows()):
        rates = np.array(json.loads(row["rates"])) * 100
        x = [layer["position"] for layer in layers] if len(layers) == len(rates) else np.linspace(0, 1, len(rates))
        order = np.argsort(x, kind="stable")
        ax.plot(np.asarray(x)[order], rates[order], marker="o", ms=4, color=colour,
                label=f"GPR {row['gpr']:.3g} {row['pd']} (acc {row['accuracy']:.1f}, −{row['flops_reduction_pct']:.0f}% FLOPs)")
    ax.set(xlabel="depth position (0 = input, 1 = output)", ylabel="pruning rate (%)",
           title=f"{run.cfg.name}: per-layer rates of the Pareto policies")
    if not len(picks):
        ax.text(0.5, 0.5, "no feasible Pareto policy yet", ha="center", transform=ax.transAxes)
    ax.grid(alpha=0.3)
    if len(picks):
        ax.legend(fontsize=7, loc="best")
    return fig


# ---- documents ----------------------------------------------------------------------------


def _markdown(title: str, sections: list[Section]) -> str:
    parts = [f"# {title}"]
    for heading, body in sections:
        parts.append(f"## {heading}")
        if isinstance(body, pd.DataFrame):
            parts.append(body.to_markdown(index=False, disable_numparse=True))
        elif isinstance(body, list):
            parts.extend(f"![{PLOTS[name]}]({name})" for name in body)
        else:
            parts.append(body)
    return "\n\n".join(parts) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:0.9em;margin:0.5em 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}img{max-width:49%;margin:0.3em 0}code{background:#f3f3f3;padding:0 3px}
.plot{margin:0.5em 0;border:1px solid #eee}"""


def _inline_markdown(text: str) -> str:
    """The summary's bullets, bold and code spans, as HTML."""
    items = []
    for line in text.splitlines():
        line = html.escape(line.removeprefix("- "))
        for mark, tag in (("**", "b"), ("`", "code")):
            pieces = line.split(mark)
            line = "".join(p if i % 2 == 0 else f"<{tag}>{p}</{tag}>" for i, p in enumerate(pieces))
        items.append(f"<li>{line}</li>")
    return "<ul>" + "".join(items) + "</ul>"


def _html(title: str, sections: list[Section], plots: dict[str, Path], interactive_divs: dict[str, str]) -> str:
    """One file that opens offline and can be mailed: interactive plots where there are some (plotly.js
    inlined), the other plots as base64 PNGs."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for heading, content in sections:
        body.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(content, pd.DataFrame):
            body.append(content.to_html(index=False, border=0))
        elif isinstance(content, list):
            for name in content:
                if name in interactive_divs:
                    body.append(f'<div class="plot">{interactive_divs[name]}</div>')
                    continue
                data = base64.b64encode(plots[name].read_bytes()).decode()
                body.append(f'<img alt="{html.escape(PLOTS[name])}" src="data:image/png;base64,{data}">')
        else:
            body.append(_inline_markdown(content))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style>{interactive.script() if interactive_divs else ''}</head>"
            f"<body>{''.join(body)}</body></html>\n")

