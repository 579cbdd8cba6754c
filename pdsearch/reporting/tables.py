"""The report's tables (pandas frames, rendered to Markdown and HTML by the document)."""
from __future__ import annotations

import pandas as pd

from pdsearch.cost import human_count
from pdsearch.run.directory import Run


def human(n: float) -> str:
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
        "FLOPs": front["flops"].map(human),
        "FLOPs red. %": front["flops_reduction_pct"].map("{:.1f}".format),
        "params": front["params"].map(human),
        "params red. %": front["params_reduction_pct"].map("{:.1f}".format),
    })


def amount_label(run: Run) -> str:
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


def best_per_gpr_and_pd(run: Run) -> pd.DataFrame:
    """The most accurate completed trial of each PD at each (binned) GPR."""
    done = run.completed.assign(gpr_bin=_gpr_bins(run))
    return done.loc[done.groupby(["gpr_bin", "pd"])["accuracy"].idxmax()].sort_values("gpr_bin")


def best_per_pd(run: Run) -> pd.DataFrame:
    best = best_per_gpr_and_pd(run)
    best = best.assign(cell=best["accuracy"].map("{:.2f}".format) + " (−" + best["flops_reduction_pct"].map("{:.0f}".format) + "%)")
    table = best.pivot(index="gpr_bin", columns="pd", values="cell").fillna("")
    table.index = [f"{g:g}" for g in table.index]
    return table.rename_axis(f"{amount_label(run)} %").reset_index()


def baseline_table(run: Run) -> pd.DataFrame:
    base = run.baseline or {}
    fmt = lambda key: f"{base[key]:.2f}" if key in base else "?"  # noqa: E731
    return pd.DataFrame([{
        "model": run.model["name"], "val acc %": fmt("val_accuracy"), "test acc %": fmt("test_accuracy"),
        "FLOPs": human(run.model["flops"]), "params": human(run.model["params"]),
        "source": base.get("source", "?"),
    }])


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


def screening_text(c: dict[str, float]) -> str:
    fmt = lambda v: "n/a (constant)" if pd.isna(v) else f"{v:.3f}"  # noqa: E731
    return "\n".join([
        f"- Over {int(c['n'])} completed trials, accuracy after BatchNorm re-estimation vs after fine-tuning: "
        f"Spearman **{fmt(c['screening_spearman'])}**, Kendall **{fmt(c['screening_kendall'])}**",
        f"- Raw pruned accuracy (no re-estimation) vs after fine-tuning: Spearman {fmt(c['raw_spearman'])}, "
        f"Kendall {fmt(c['raw_kendall'])}",
        "- 1 would mean the screening orders policies exactly as fine-tuning does; it is what MO-ASHA's rung 0 reads.",
    ])
