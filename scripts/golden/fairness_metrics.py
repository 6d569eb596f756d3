#!/usr/bin/env python3
"""Cross-check of fairness/metrics.cc: an independent implementation of
every metric (numpy, written from AIF360's definitions in
aif360/metrics/classification_metric.py: statistical_parity_difference,
disparate_impact, equal_opportunity_difference, average_odds_difference,
average_abs_odds_difference, accuracy, balanced accuracy) on one saved set
of predictions, with and without sample weights.

    python3 scripts/golden/fairness_metrics.py

writes fairness/testdata/predictions.csv (500 seeded rows: y_true, y_pred,
privileged, weight) and fairness/testdata/metrics_golden.txt, which
fairness/metrics_test.cc reads; the C++ tests do not need Python.
"""
import os

import numpy as np

root = os.path.join(os.path.dirname(__file__), "..", "..", "fairness",
                    "testdata")
rng = np.random.default_rng(20261201)
n = 500
a = (rng.random(n) < 0.6).astype(int)
y = (rng.random(n) < np.where(a == 1, 0.45, 0.3)).astype(int)
# A classifier that is right 80% of the time and favours the privileged.
pred = np.where(rng.random(n) < 0.8, y, 1 - y)
pred = np.where((a == 1) & (rng.random(n) < 0.1), 1, pred)
w = np.round(rng.uniform(0.2, 3.0, n), 4)

with open(os.path.join(root, "predictions.csv"), "w") as f:
    f.write("y_true,y_pred,privileged,weight\n")
    for i in range(n):
        f.write(f"{y[i]},{pred[i]},{a[i]},{w[i]:.4f}\n")


def metrics(y, p, a, w):
    def rate(mask_num, mask_den):
        den = w[mask_den].sum()
        return w[mask_num & mask_den].sum() / den if den > 0 else float("nan")

    out = {}
    g = {}
    for grp in (0, 1):
        m = a == grp
        g[grp] = dict(
            sel=rate(p == 1, m),
            tpr=rate(p == 1, m & (y == 1)),
            fpr=rate(p == 1, m & (y == 0)),
        )
    out["accuracy"] = w[p == y].sum() / w.sum()
    tpr = rate(p == 1, y == 1)
    tnr = rate(p == 0, y == 0)
    out["balanced_accuracy"] = 0.5 * (tpr + tnr)
    out["spd"] = g[0]["sel"] - g[1]["sel"]
    out["di"] = g[0]["sel"] / g[1]["sel"]
    out["eod"] = g[0]["tpr"] - g[1]["tpr"]
    out["aod"] = 0.5 * ((g[0]["fpr"] - g[1]["fpr"]) + (g[0]["tpr"] - g[1]["tpr"]))
    out["aaod"] = 0.5 * (abs(g[0]["fpr"] - g[1]["fpr"]) + abs(g[0]["tpr"] - g[1]["tpr"]))
    return out


with open(os.path.join(root, "metrics_golden.txt"), "w") as f:
    f.write("# metric unweighted weighted (scripts/golden/fairness_metrics.py)\n")
    mu = metrics(y, pred, a, np.ones(n))
    mw = metrics(y, pred, a, w)
    for k in mu:
        f.write(f"{k} {mu[k]!r} {mw[k]!r}\n")
print(open(os.path.join(root, "metrics_golden.txt")).read())
