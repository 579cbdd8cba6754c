"""The report's matplotlib figures (object API: no pyplot state, no display), the PNGs of report.md.

Each trade-off figure draws what pdsearch.reporting.tradeoff describes; interactive.py draws
the same descriptions with Plotly for report.html.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pdsearch.reporting.tables import amount_label, best_per_gpr_and_pd
from pdsearch.reporting.tradeoff import MeasuredGap, cost_axis, envelope
from pdsearch.run.directory import Run, shipped_precision

MAX_PROFILES = 10  # rate profiles drawn (evenly spaced along the front)


def screening(run: Run, c: dict[str, float]) -> Figure:
    done = run.completed
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.subplots()
    ax.scatter(done["accuracy_pruned"], done["accuracy"], s=18, color="lightgrey", label="raw pruned accuracy")
    colours, key = _colouring(done)
    ax.scatter(done["accuracy_before_finetune"], done["accuracy"], c=colours, s=30)
    ax.set(xlabel="accuracy before fine-tuning (%)", ylabel="validation accuracy after fine-tuning (%)",
           title=f"{run.cfg.name}: screening vs fine-tuned accuracy")
    ax.grid(alpha=0.3)
    raw = Line2D([], [], ls="", marker="o", color="lightgrey", label="raw pruned accuracy")
    note = Line2D([], [], ls="", label=f"coloured by PD: after BN re-estimation (Spearman {c['screening_spearman']:.2f})")
    _legend_or_bar(fig, ax, key, [raw, note])
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


def tradeoff(run: Run, front: pd.DataFrame, objective: str) -> Figure:
    done, axis = run.completed, cost_axis(run, objective)
    colours, key = _colouring(done)
    colours = np.asarray(colours)
    on_front = done.index.isin(front.index)
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.subplots()
    x = done[axis.metric].astype(float) / axis.scale
    shrink = _stacked_shrink(x, done["accuracy"])
    ax.scatter(x[~on_front], done["accuracy"][~on_front], c=colours[~on_front], s=24 * shrink[~on_front], alpha=0.3)
    ax.scatter(x[on_front], done["accuracy"][on_front], c=colours[on_front], s=70 * shrink[on_front],
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


def _stacked_shrink(x: pd.Series, y: pd.Series) -> np.ndarray:
    """Marker size factors: points that share a position are drawn smaller one after the other, so each one's
    colour shows as a ring around the next (two PDs with the same cost and accuracy)."""
    rank = pd.DataFrame({"x": x.round(9).to_numpy(), "y": y.round(9).to_numpy()}).groupby(["x", "y"]).cumcount()
    return np.maximum(1.0 - 0.3 * rank.to_numpy(), 0.25) ** 2


def gap_plot(run: Run, front: pd.DataFrame, gap: MeasuredGap) -> Figure:
    """Where fewer FLOPs did not mean less of a measured cost: every completed trial, the diagonal for reference."""
    done = run.completed
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.subplots()
    colours, key = _colouring(done)
    ax.scatter(done[gap.x], done[gap.y].astype(float), c=colours, s=30)
    top = float(max(done[gap.x].max(), 1.0))
    ax.plot([0, top], [0, top], color="grey", ls=":", lw=1)
    ax.set(xlabel=gap.xlabel, ylabel=gap.ylabel + (f", {gap.where}" if gap.where else ""), title=f"{run.cfg.name}: {gap.title}")
    ax.grid(alpha=0.3)
    _legend_or_bar(fig, ax, key, [Line2D([], [], color="grey", ls=":", label=gap.diagonal)])
    return fig


def accuracy_vs_gpr(run: Run) -> Figure:
    done = run.completed
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.subplots()
    colours, key = _colouring(done)
    if isinstance(key, ScalarMappable):  # continuous shapes: every trial, coloured by slope
        ax.scatter(done[run.cfg.space.amount[0]], done["accuracy"], c=colours, s=30)
    else:
        palette = {h.get_label(): h.get_color() for h in key}
        for pd_label, best in best_per_gpr_and_pd(run).groupby("pd"):
            yerr = best["accuracy_std"] if run.cfg.space.repeats > 1 else None
            ax.errorbar(best["gpr_bin"], best["accuracy"], yerr=yerr, marker="o", ms=5, capsize=3,
                        color=palette[str(pd_label)], label=str(pd_label))
    extra = []
    if run.baseline:
        ax.axhline(run.baseline["val_accuracy"], color="black", ls=":", lw=1)
        extra.append(Line2D([], [], color="black", ls=":", label="baseline"))
    ax.set(xlabel=f"{amount_label(run)} (%)", ylabel="best validation accuracy (%)",
           title=f"{run.cfg.name}: accuracy vs {amount_label(run)} per distribution")
    ax.grid(alpha=0.3)
    _legend_or_bar(fig, ax, key, extra)
    return fig


def rate_profiles(run: Run, front: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(10, 4.8), layout="constrained")
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
    if len(picks):  # beside the plot: inside, it sits on the curves
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig


def precision_fronts(run: Run) -> Figure:
    """Each precision's trials and its own front, side by side on one latency axis (the FP32 baseline's: what
    quantization and pruning buy together), or on FLOPs where latency was not measured."""
    done, precisions = run.completed, run.cfg.space.precision
    shipped = shipped_precision(done)
    timed = "latency_ratio" in done.columns and done["latency_ratio"].notna().any()
    fig = Figure(figsize=(5.5 * len(precisions), 4.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(precisions), sharey=True))
    for ax, precision in zip(axes, precisions):
        mine = done[shipped == precision]
        front = run.in_precision(precision).front()
        if timed:
            to_fp32 = mine.get("latency_ratio_vs_fp32", mine["latency_ratio"]).fillna(mine["latency_ratio"])
            x, label = to_fp32.astype(float), "latency (× the FP32 baseline's)"
        else:
            x, label = mine["flops_reduction_pct"].astype(float), "FLOPs reduction (%)"
        colours, key = _colouring(mine) if len(mine) else ([], [])
        ax.scatter(x, mine["accuracy"], c=colours, s=24, alpha=0.45)
        on = mine.index.isin(front.index)
        ax.scatter(x[on], mine["accuracy"][on], facecolors="none", edgecolors="black", s=80, linewidths=1.0)
        ax.set(xlabel=label, title=f"{precision}: {len(mine)} policies, {len(front)} on its front")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation accuracy as deployed (%)")
    fig.suptitle(f"{run.cfg.name}: the front in each precision")
    return fig


def quantization_drop(run: Run) -> Figure:
    """What quantization costs each INT8 policy (FP32 − INT8 validation accuracy) against how much it prunes."""
    done = run.completed
    quantized = done[shipped_precision(done) != "fp32"]
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.subplots()
    colours, key = _colouring(quantized)
    ax.scatter(quantized["gpr"].astype(float), quantized["quantization_drop"].astype(float), c=colours, s=30)
    ax.axhline(0, color="grey", ls=":", lw=1)
    ax.set(xlabel="pruning rate (GPR, or a budget's homogeneous equivalent, %)",
           ylabel="quantization drop (FP32 − INT8 val accuracy, points)",
           title=f"{run.cfg.name}: accuracy lost to INT8 against the pruning rate")
    ax.grid(alpha=0.3)
    _legend_or_bar(fig, ax, key, [])
    return fig


def quantized_latency(run: Run) -> Figure:
    """Each INT8 policy's latency against the same pruned model's in FP32, timed side by side: the speed-up
    quantization gives is not a constant, so it reorders the policies."""
    done = run.completed
    quantized = done[(shipped_precision(done) != "fp32") & done["quantization_speedup"].notna()]
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.subplots()
    colours, key = _colouring(quantized)
    base = quantized["baseline_latency_ms_vs_fp32"].astype(float)
    ax.scatter(quantized["latency_fp32_ms"].astype(float) / base, quantized["latency_ms"].astype(float) / base,
               c=colours, s=30)
    top = float(max((quantized["latency_fp32_ms"].astype(float) / base).max(), 1.0))
    ax.plot([0, top], [0, top], color="grey", ls=":", lw=1)
    ax.set(xlabel="FP32 latency (× the FP32 baseline's)", ylabel="INT8 latency (× the FP32 baseline's)",
           title=f"{run.cfg.name}: INT8 against FP32 latency per policy")
    ax.grid(alpha=0.3)
    _legend_or_bar(fig, ax, key, [Line2D([], [], color="grey", ls=":", label="no speed-up")])
    return fig
