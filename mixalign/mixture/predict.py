"""From a candidate's short probe to the end of the main run: the long-run model the selection trusts.

A candidate probe (the main run's schedule in miniature) ends m bits/byte closer to the target than
uniform's probe (m < 0: closer). Over a run many times longer that advantage grows, but not for free:
a mixture that concentrates its weight repeats its favoured domains and lets the others drift, a
cost a short probe does not see and which does not shrink with the target's distance. The model
predicts the main run's change against uniform, in bits/byte, as

    M = a * m + b * concentration(w),      concentration(w) = KL(w || uniform) = sum_k w_k log(K w_k)

(no intercept: uniform predicts 0). a and b are fitted by least squares on the tuning draw's main
runs (`benchmarks/tune.py`; a main run 5 candidate-probe lengths long) and live in the config
(`mixture.long_run`). Pure functions on arrays.
"""

from __future__ import annotations

import numpy as np


def concentration(weights: np.ndarray) -> float:
    """KL(w || uniform) in nats: 0 for uniform, log K for a single domain."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    nonzero = w > 0
    return float((w[nonzero] * np.log(len(w) * w[nonzero])).sum())


def predict_change(margin: float, weights: np.ndarray, coefficients) -> float:
    """The main run's predicted distance minus uniform's (bits/byte), from the probe's margin over uniform."""
    a, b = coefficients
    return float(a * margin + b * concentration(weights))


def fit_long_run(margins: np.ndarray, concentrations: np.ndarray, outcomes: np.ndarray) -> tuple[float, float]:
    """(a, b): least squares of the main runs' changes on the probes' margins and the concentrations."""
    X = np.column_stack([margins, concentrations]).astype(np.float64)
    coef, *_ = np.linalg.lstsq(X, np.asarray(outcomes, dtype=np.float64), rcond=None)
    return float(coef[0]), float(coef[1])
