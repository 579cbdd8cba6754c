"""The report's interactive plots (Plotly, as Optuna's own visualisation): hover a point, see its policy.

report.html inlines plotly.js once, so the file opens offline and requests nothing; the
PNGs (figures.py) stay for report.md and the README.
"""
from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.offline import get_plotlyjs

from pdsearch.catalog.objectives import reductions
from pdsearch.reporting.tradeoff import MeasuredGap, cost_axis, envelope
from pdsearch.run.directory import Run

MAX_PD_TRACES = 10  # more distinct distributions (continuous shapes): one trace coloured by slope
HEIGHT = 460


def hover_texts(run: Run, rows: pd.DataFrame) -> list[str]:
    """The policy (GPR or budget, PD, criterion), accuracy, reductions and trial id of each row."""
    space = run.space
    texts = []
    for _, row in rows.iterrows():
        policy = space.policy_of_row(row)
        texts.append("<br>".join(html.escape(line) for line in (
            policy.name,
            f"{policy.amount} · {row['pd']} · criterion {row['criterion']}",
            f"val acc {row['accuracy']:.2f}% (drop {row['acc_drop']:+.2f} pts)",
            reductions(row).replace("-", "−"),
            f"trial {row['trial_id']}",
        )))
    return texts


def _points(run: Run, front: pd.DataFrame, x: pd.Series, y: pd.Series) -> list[go.Scatter]:
    """Completed trials as markers, one trace per PD (click the legend to hide one); the front outlined in black."""
    done = run.completed
    on_front = pd.Series(done.index.isin(front.index), index=done.index)
    marker = lambda rows: dict(  # noqa: E731
        size=[13 if f else 8 for f in on_front[rows]], opacity=[1.0 if f else 0.45 for f in on_front[rows]],
        line=dict(color="black", width=[1.8 if f else 0 for f in on_front[rows]]))
    text = pd.Series(hover_texts(run, done), index=done.index)
    labels = done["pd"].astype(str)
    if labels.nunique() > MAX_PD_TRACES:
        rows = done.index
        return [go.Scatter(x=x, y=y, mode="markers", name="trials", hovertext=text, hoverinfo="text",
                           marker={**marker(rows), "color": done["slope"].astype(float), "colorscale": "Viridis",
                                   "colorbar": {"title": "slope"}})]
    traces = []
    for i, name in enumerate(sorted(labels.unique())):
        rows = done.index[labels == name]
        traces.append(go.Scatter(x=x[rows], y=y[rows], mode="markers", name=name,
                                 hovertext=text[rows], hoverinfo="text",
                                 marker={**marker(rows), "color": qualitative.Plotly[i % len(qualitative.Plotly)]}))
    return traces


def tradeoff(run: Run, front: pd.DataFrame, objective: str) -> go.Figure:
    """Accuracy against one cost objective: every completed trial, the front outlined, the baseline a star."""
    done, axis = run.completed, cost_axis(run, objective)
    fig = go.Figure(_points(run, front, done[axis.metric].astype(float) / axis.scale, done["accuracy"]))
    seen = envelope(front, axis.metric)
    fig.add_trace(go.Scatter(x=seen[axis.metric].astype(float) / axis.scale, y=seen["accuracy"], mode="lines",
                             line=dict(shape="hv", dash="dash", color="black", width=1), name="Pareto front",
                             hoverinfo="skip"))
    if run.baseline:
        fig.add_trace(go.Scatter(x=[axis.baseline], y=[run.baseline["val_accuracy"]], mode="markers", name="baseline",
                                 hovertext=[f"baseline: val acc {run.baseline['val_accuracy']:.2f}%"],
                                 hoverinfo="text", marker=dict(symbol="star", size=16, color="black")))
    return _layout(fig, f"{run.cfg.name}: accuracy vs {axis.name}", f"{axis.name} ({axis.unit})", "validation accuracy (%)")


def gap_plot(run: Run, front: pd.DataFrame, gap: MeasuredGap) -> go.Figure:
    """Where fewer FLOPs did not mean less of a measured cost; the diagonal is where they agree."""
    done = run.completed
    fig = go.Figure(_points(run, front, done[gap.x], done[gap.y].astype(float)))
    top = float(max(done[gap.x].max(), 1.0))
    fig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", line=dict(dash="dot", color="grey"),
                             name=gap.diagonal, hoverinfo="skip"))
    return _layout(fig, f"{run.cfg.name}: {gap.title}", gap.xlabel, gap.ylabel)


def _layout(fig: go.Figure, title: str, xlabel: str, ylabel: str) -> go.Figure:
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, template="plotly_white", height=HEIGHT,
                      hoverlabel=dict(align="left"), legend=dict(itemsizing="constant"), margin=dict(t=50, r=20))
    return fig


def div(fig: go.Figure, div_id: str) -> str:
    """A figure as a <div> for report.html (plotly.js comes from ``script``)."""
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def script() -> str:
    """plotly.js, inlined (about 4.6 MB): the report opens offline and makes no request."""
    return f"<script>{get_plotlyjs()}</script>"
