"""``pdsearch report RUN_DIR``: what a run found, as PNG plots, report.md and a self-contained report.html.

The document assembles tables (tables.py), matplotlib figures (figures.py) and, in
report.html, the same trade-off plots drawn with Plotly (interactive.py); both kinds of
figure read one description of each plot (tradeoff.py). A report can be made while the
search is still running or after it crashed: it shows the trials finished so far.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import pandas as pd

from pdsearch.catalog.objectives import OBJECTIVES
from pdsearch.errors import PdsearchError
from pdsearch.reporting import figures as mpl
from pdsearch.reporting import interactive
from pdsearch.reporting.profile_report import plot_profile
from pdsearch.reporting.tables import (
    amount_label,
    baseline_table,
    best_per_pd,
    front_table,
    human,
    screening_correlation,
    screening_text,
)
from pdsearch.reporting.tradeoff import cost_axes, measured_axes, measured_gap, predicted_gap
from pdsearch.run.directory import SENSITIVITY_PNG, Run, load_run
from pdsearch.run.front import hypervolume
from pdsearch.trial.profile import cached_profile

PREDICTED_PNG = "latency_predicted_vs_measured.png"
PLOTS = {
    **{f"pareto_{name}.png": f"Accuracy vs {o.label}" for name, o in OBJECTIVES.items() if not o.constraint.evolves},
    **{f"flops_vs_{name}.png": f"Measured {o.constraint.label} vs FLOPs reduction"
       for name, o in OBJECTIVES.items() if o.measures},
    PREDICTED_PNG: "Latency reduction predicted by the latency table vs measured in the trials",
    "accuracy_vs_gpr.png": "Accuracy vs GPR (or budget) per pruning distribution",
    "rate_profiles.png": "Per-layer pruning rates of the Pareto policies",
    SENSITIVITY_PNG: "Sensitivity profile of the baseline (each group pruned alone)",
    "screening.png": "Screening accuracy (BatchNorm re-estimated) vs accuracy after fine-tuning",
    "precision_fronts.png": "Accuracy as deployed, each precision's policies and front side by side",
    "quantization_drop.png": "Accuracy lost to INT8 against the pruning rate",
    "quantized_latency.png": "INT8 against FP32 latency of each INT8 policy",
}
PRECISION_PLOTS = ("precision_fronts.png", "quantization_drop.png", "quantized_latency.png")
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
    hv = hypervolume(front, objectives, run.model)

    figures = {
        **{f"pareto_{name}.png": mpl.tradeoff(run, front, name) for name in cost_axes(run)},
        **{f"flops_vs_{name}.png": mpl.gap_plot(run, front, measured_gap(run, name)) for name in measured_axes(run)},
        "accuracy_vs_gpr.png": mpl.accuracy_vs_gpr(run),
        "rate_profiles.png": mpl.rate_profiles(run, front),
    }
    interactive_figures = {
        **{f"pareto_{name}.png": interactive.tradeoff(run, front, name) for name in cost_axes(run)},
        **{f"flops_vs_{name}.png": interactive.gap_plot(run, front, measured_gap(run, name)) for name in measured_axes(run)},
    }
    predicted = predicted_gap(run)
    if predicted is not None:
        figures[PREDICTED_PNG] = mpl.gap_plot(run, front, predicted)
        interactive_figures[PREDICTED_PNG] = interactive.gap_plot(run, front, predicted)
    figures.update(_precision_figures(run))
    screening = screening_correlation(done)
    if screening:
        figures["screening.png"] = mpl.screening(run, screening)
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
        ("Trade-off", [name for name in plots if name not in (SENSITIVITY_PNG, "screening.png", *PRECISION_PLOTS)]),
        (f"Pareto front ({len(front)} policies)", tables["front"]),
        (f"Best policy per PD at each {amount_label(run)} (validation accuracy %, FLOPs reduction %)", tables["best_per_pd"]),
        ("Baseline", tables["baseline"]),
    ]
    if any(name in plots for name in PRECISION_PLOTS):
        sections.append(("Precision: the front as it ships", [name for name in PRECISION_PLOTS if name in plots]))
    if screening:
        sections.append(("How well the screening ranks the fine-tuned accuracy", screening_text(screening)))
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


def _precision_figures(run: Run) -> dict:
    """Where the space ships in a quantized precision: the fronts side by side, the quantization drop, and INT8
    against FP32 latency where it was timed."""
    done = run.completed
    if "quantization_drop" not in done.columns or not done["quantization_drop"].notna().any():
        return {}
    found = {"precision_fronts.png": mpl.precision_fronts(run), "quantization_drop.png": mpl.quantization_drop(run)}
    if "quantization_speedup" in done.columns and done["quantization_speedup"].notna().any():
        found["quantized_latency.png"] = mpl.quantized_latency(run)
    return found


def _summary(run: Run, front: pd.DataFrame, hv: float) -> str:
    budget = run.space.size()
    finished = len(run.trials)
    state = f"{finished} trials finished of {budget}"
    if finished < budget:
        state += " (partial run: still running, or stopped early)"
    objectives = run.cfg.search.objectives
    reference = {name: o.reference(run.model) for name, o in OBJECTIVES.items()}
    reference |= {"flops": f"FLOPs = baseline ({human(run.model['flops'])})",
                 "params": f"params = baseline ({human(run.model['params'])})"}
    return "\n".join([
        f"- Run: `{run.run_dir}` (read from {run.source})",
        f"- {state}: {len(run.completed)} completed, {len(run.stopped)} stopped early by the scheduler, "
        f"{len(run.failed)} failed or not buildable",
        f"- Objectives: {', '.join(objectives)}; constraints: {run.cfg.search.constraints.describe()}",
        f"- Pareto front: {len(front)} policies",
        f"- Hypervolume: **{hv:.4f}**, each objective as a loss in [0, 1] (1 − accuracy/100, cost / baseline cost); "
        f"reference point: {', '.join(reference[o] for o in objectives)}. 1.0 would be a perfectly accurate, free model.",
    ])




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

