"""Try other calibrations of a latency table on measurements already taken, without timing anything again.

    python benchmarks/latency_model.py --models mobilenet_v2 --precisions int8 --save runs/lm
    python benchmarks/latency_refit.py runs/lm

For each saved table and its held-out policies, weighs the table's terms
(``LatencyTable.TERMS``: the layers' sum on their aligned grids, what the off grids add,
the activations of layers off the multiple, their number) in several ways, each fitted on
the table's anchors (as the table does) and, as a ceiling, on the held-out policies
themselves, then prints Spearman, median error and the median bias (predicted - measured
ratio, points) for round_to 1 and 8 apart. If even the ceiling misses, the layer tables,
not the calibration, are what misses.
"""
import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import nnls
from scipy.stats import spearmanr

from pdsearch.cost.latency_table import LatencyTable, kept_channels
from pdsearch.cost.table_build import anchor_rates
from pdsearch.planning import Planner

TERMS = list(LatencyTable.TERMS)
MODELS = {  # the terms summed under each fitted weight
    "pdsearch (each term its own weight)": [[t] for t in TERMS],
    "one scale, reorder (round 3)": [["layers_ms", "off_penalty_ms"], ["off_activations_m"]],
    "one scale": [["layers_ms", "off_penalty_ms"]],
    "one scale, off_layers": [["layers_ms", "off_penalty_ms"], ["off_layers"]],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", help="what benchmarks/latency_model.py --save wrote")
    folder = Path(parser.parse_args().folder)
    policies = pd.read_json(folder / "policies.json", precise_float=True)
    rows = []
    for (model, runtime, precision), part in policies.groupby(["model", "runtime", "precision"], sort=False):
        table = LatencyTable.load(folder / f"{model}-{runtime}-{precision}.table.json")
        planner = Planner(model, num_classes=1000, input_size=table.key["input_size"])

        def features(rates_list):  # rates are fractions of channels really removed: read back as channels
            removed = [np.array([round(r * g.channels) for g, r in zip(planner.groups, rates)]) for rates in rates_list]
            return np.array([table.features(kept_channels(planner.cost_model, table, n)) for n in removed]) \
                - table.features({})

        anchors = features(anchor_rates(planner.groups))
        anchor_ms = (np.array([a["ratio"] for a in table.anchors]) - 1) * table.baseline_ms
        held = features(part["rates"])
        measured = (part["measured_ms"] / part["baseline_ms"]).to_numpy()
        round_to = part["round_to"].to_numpy()
        for name, sums in MODELS.items():
            def design(f):
                return np.stack([f[:, [TERMS.index(t) for t in s]].sum(1) for s in sums], 1)
            for fitted_on, (x, y) in {"anchors": (anchors, anchor_ms),
                                      "held-out (ceiling)": (held, (measured - 1) * table.baseline_ms)}.items():
                coef, _ = nnls(design(x), y)
                predicted = 1 + design(held) @ coef / table.baseline_ms
                gap = predicted - measured
                rows.append({"model": model, "precision": precision, "terms": name, "fitted on": fitted_on,
                             "coefficients": " ".join(f"{c:.3g}" for c in coef),
                             "spearman": spearmanr(predicted, measured).statistic,
                             "median_err_%": float(np.median(np.abs(gap) / measured) * 100),
                             "bias_round_to_1_pts": float(np.median(gap[round_to == 1]) * 100),
                             "bias_round_to_8_pts": float(np.median(gap[round_to == 8]) * 100)})
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
