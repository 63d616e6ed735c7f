"""Choosing among measured mixtures: the one the long-run model puts farthest below uniform, or uniform.

Each candidate mixture was trained as a short probe and measured against the target, paired with
uniform's probe over the same texts. A candidate is eligible when its probe is measurably closer to
the target than uniform's (more than `z` paired standard errors); of the eligible, the one whose
*predicted* main-run change against uniform (`predict.py`: the probe's margin, discounted for how
concentrated the mixture is) is lowest is kept, if that prediction is below zero. Otherwise uniform
is kept and the reason says why. Pure functions of per-text distances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mixalign.mixture.predict import predict_change


@dataclass(frozen=True)
class Measured:
    """One candidate's distance to the target after its probe: per text, in bits/byte terms."""

    name: str
    weights: np.ndarray
    terms: np.ndarray  # per-text contributions whose mean is the distance (bits/byte)

    @property
    def distance(self) -> float:
        return float(self.terms.mean())


def paired_difference(a: Measured, b: Measured) -> tuple[float, float]:
    """mean(a - b) over the same texts and its standard error: far less noisy than two separate SEs."""
    d = a.terms - b.terms
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")


@dataclass(frozen=True)
class Selection:
    chosen: str
    best: str  # the lowest measured distance at probe time, whether or not it was kept
    margin: float  # the chosen minus uniform at probe time (negative: closer)
    margin_se: float
    predicted: float  # the long-run model's main run minus uniform's, bits/byte, for the chosen (0 for uniform)
    reason: str


def predictions(measured: list[Measured], long_run) -> dict[str, float]:
    """Each candidate's predicted main-run distance minus uniform's (bits/byte)."""
    uniform = next(m for m in measured if m.name == "uniform")
    return {m.name: predict_change(paired_difference(m, uniform)[0], m.weights, long_run)
            for m in measured if m.name != "uniform"}


def _measurably_closer(m: Measured, uniform: Measured, z: float) -> bool:
    margin, se = paired_difference(m, uniform)
    return margin + z * se < 0


def select(measured: list[Measured], measure: str, long_run, z: float = 2.0) -> Selection:
    """Uniform, unless a candidate beats it by more than z paired SEs at probe time *and* the long-run
    model predicts its main run below uniform's: then the lowest prediction among those."""
    by_name = {m.name: m for m in measured}
    if "uniform" not in by_name:
        raise ValueError("the candidates must include uniform, the reference")
    uniform = by_name["uniform"]
    best = min(measured, key=lambda m: m.distance)
    predicted = predictions(measured, long_run)
    eligible = [name for name, p in predicted.items() if p < 0 and _measurably_closer(by_name[name], uniform, z)]
    if not eligible:
        margin, se = paired_difference(best, uniform) if best is not uniform else (0.0, 0.0)
        why = ("uniform has the lowest measured " + measure if best is uniform else
               f"no candidate is both measurably closer than uniform ({z:g} paired SE) and predicted closer after "
               f"the main run (best at probe time: {best.name}, {margin:+.4f} +- {se:.4f} bits/byte)")
        return Selection("uniform", best.name, 0.0, 0.0, 0.0, why + ": keeping uniform")
    chosen = min(eligible, key=predicted.get)
    margin, se = paired_difference(by_name[chosen], uniform)
    return Selection(chosen, best.name, margin, se, predicted[chosen],
                     f"{-margin:.4f} +- {se:.4f} bits/byte below uniform in {measure} at probe time; predicted "
                     f"{-predicted[chosen]:.4f} below uniform after the main run, the lowest of the "
                     f"{len(eligible)} eligible")
