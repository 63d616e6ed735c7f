"""Choosing among measured mixtures: never recommend one that is not measurably better than uniform.

The solver trusts a first-order model of short probes over a run many times longer, and its
direction solver returns sparse mixtures; on a target trained on a near-uniform mixture that
solution ended twice as far as uniform (SPEC section 3, step 6). So a few candidate mixtures (the
solution, its shrinkages toward uniform, uniform, natural) are each trained as a short probe and
measured against the target, and the best measured one is kept only if it beats uniform by more
than `z` paired standard errors over the texts *and* by at least `min_gain` of uniform's distance.
The second test is there because a short probe's ranking of mixtures that are all near uniform
does not survive a run many times longer: on a near-uniform target the probes put a shrunk solution
3-5% below uniform (z = 4 to 6) and the full run put it 3% above (BENCHMARKS.md, "Robustness").

Of the candidates that pass, the one closest to uniform is kept among those whose gain is within
`TIE` of the best gain. A short probe does not see the harm of concentrating the weight: the
domains a sparse mixture starves are forgotten over the long run, and a small domain given a large
weight is repeated for many epochs. On a robustness target (its own mixture 0.43 email, spread
elsewhere) the sharpest candidate (0.55 email, five domains near 0) was the probes' best by a hair
and ended 57% *above* uniform after 200 steps (`benchmarks/robustness.py` at commit 65d4bde); the
flatter one tied with it at probe time ends 13% below uniform, closing 70% of the gap to the
target's own mixture (BENCHMARKS.md, "Robustness", target 1).

`min_gain` kept uniform on every near-uniform target, whose whole gap to its own mixture is a few
percent of the distance: no candidate can clear 10% there. The share-response estimate
(`response.py`) is built from probes near uniform and flattened; when no candidate clears
`min_gain`, it is kept if it beats uniform by z paired SEs and gives every domain between half and
twice its uniform share. The band is not decoration: toward the far demo target (another model,
whose per-domain gains say more about its size than its mixture; `mixalign weights --config
configs/pile.yaml --mixture.target checkpoints/target.ckpt`) the estimate starves three domains,
the pattern that reversed over long runs before; outside the band it stays a candidate like any
other. Its effect on the robustness targets is in BENCHMARKS.md ("Robustness").
Pure functions of per-text distances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TIE = 0.25  # candidates within this fraction of the best gain over uniform count as tied with it
NEAR = 2.0  # near uniform: every domain keeps between 1/NEAR and NEAR times its uniform share


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
    best: str  # the lowest measured distance, whether or not it was kept
    margin: float  # best minus uniform (negative: better)
    margin_se: float
    reason: str


def _passes(m: Measured, uniform: Measured, z: float, needed: float) -> bool:
    margin, se = paired_difference(m, uniform)
    return margin + z * se < 0 and -margin >= needed


def _is_near(weights: np.ndarray, uniform: np.ndarray) -> bool:
    ratio = weights / uniform
    return bool((ratio >= 1 / NEAR).all() and (ratio <= NEAR).all())


def _closest_to_uniform(candidates: list[Measured], uniform: Measured) -> Measured:
    return min(candidates, key=lambda m: np.abs(m.weights - uniform.weights).sum())


def select(measured: list[Measured], measure: str, z: float = 2.0, min_gain: float = 0.1,
           tie: float = TIE, near_uniform: frozenset[str] = frozenset()) -> Selection:
    """Uniform unless a candidate beats it by more than z paired SEs and by at least `min_gain` x
    uniform's distance; of those that do, the one closest to uniform (L1) whose measured gain is
    within `tie` of the best's (see the module docstring).

    `near_uniform` names candidates estimated from probes near uniform (`response.py`): when no
    candidate clears `min_gain`, the flattest of these that beats uniform by z paired SEs *and*
    stays near uniform (every share within a factor NEAR of uniform's) is kept instead of uniform.
    """
    by_name = {m.name: m for m in measured}
    if "uniform" not in by_name:
        raise ValueError("the candidates must include uniform, the reference")
    uniform = by_name["uniform"]
    best = min(measured, key=lambda m: m.distance)
    needed = min_gain * uniform.distance
    passing = [m for m in measured if m.name != "uniform" and _passes(m, uniform, z, needed)]
    local = [m for m in measured if m.name in near_uniform and _is_near(m.weights, uniform.weights)
             and _passes(m, uniform, z, 0.0)]
    if best.name == "uniform":
        return Selection("uniform", "uniform", 0.0, 0.0, f"uniform has the lowest measured {measure}")
    if not passing and local:
        chosen = _closest_to_uniform(local, uniform)
        margin, se = paired_difference(chosen, uniform)
        return Selection(chosen.name, best.name, margin, se,
                         f"no candidate cleared min_gain ({needed:.4f}); {chosen.name}, the flattest of the "
                         f"estimates made near uniform that beat it by {z:g} SE, is {-margin:.4f} +- {se:.4f} "
                         f"bits/byte below uniform")
    if not passing:
        margin, se = paired_difference(best, uniform)
        return Selection("uniform", best.name, margin, se,
                         f"the best candidate ({best.name}) is not measurably better than uniform in {measure} "
                         f"({margin:+.4f} +- {se:.4f} bits/byte; needed {z:g} SE and {needed:.4f}): keeping uniform")
    top = min(passing, key=lambda m: m.distance)
    window = top.distance + tie * (uniform.distance - top.distance)
    chosen = _closest_to_uniform([m for m in passing if m.distance <= window], uniform)
    margin, se = paired_difference(chosen, uniform)
    why = (f"lowest measured {measure}" if chosen is top else
           f"closest to uniform of the candidates within {tie:.0%} of the best gain ({top.name}: "
           f"{uniform.distance - top.distance:.4f})")
    return Selection(chosen.name, best.name, margin, se, f"{why}, {-margin:.4f} +- {se:.4f} bits/byte below uniform")
