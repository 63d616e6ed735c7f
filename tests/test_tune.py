"""`benchmarks/tune.py` on a constructed tuning draw: the fit, the replayed rules, the gap closed."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from helpers import REPO

sys.path.insert(0, str(REPO))

from benchmarks.tune import analyse, points  # noqa: E402
from mixalign.mixture.predict import concentration  # noqa: E402

DOMAINS = [f"d{i}" for i in range(4)]


def candidate(name: str, weights, probe_margin: float, main_change: float) -> dict:
    return {"name": name, "weights": dict(zip(DOMAINS, weights)), "margin": probe_margin, "margin_se": 0.001,
            "exact_to_target": 0.1, "exact_from_target": 0.1, "main_minus_uniform": main_change,
            "main_minus_uniform_se": 0.001}


def setting(family: str, flat_main: float, sharp_main: float, mid_main: float = -0.005) -> dict:
    """The main runs obey M = 2 m + 0.05 concentration exactly (m: the probe's margin over uniform)."""
    flat, mid, sharp = [0.4, 0.2, 0.2, 0.2], [0.6, 0.2, 0.1, 0.1], [0.85, 0.05, 0.05, 0.05]
    rows = [{"name": "uniform", "weights": dict(zip(DOMAINS, [0.25] * 4)), "margin": 0.0, "margin_se": 0.0,
             "exact_to_target": 0.1, "exact_from_target": 0.1}]
    for name, w, main in (("kl-softmin 2.00", flat, flat_main), ("kl-softmin 1.00", mid, mid_main),
                          ("kl-softmin 0.50", sharp, sharp_main)):
        rows.append(candidate(name, w, (main - 0.05 * concentration(np.array(w))) / 2, main))  # m that law implies
    return {"family": family, "candidates": rows, "exact_kl": {"uniform": 0.2}, "gap_uniform_minus_own": 0.04,
            "chosen": "uniform", "gap_closed": 0.0, "z_vs_uniform": 0.0}


def test_the_fit_recovers_the_law_the_draw_obeys_and_the_rules_replay_it():
    draw = {"meta": {"sources": [{"file": "robustness-tuning.json", "code_hash": "h", "commit": "c"}]},
            "targets": [setting("continued", -0.02, -0.01), setting("other-model", -0.01, -0.03),
                        setting("scratch", -0.03, 0.01), setting("continued", -0.015, -0.02)]}
    result = analyse(draw)
    assert result["coefficients"] == pytest.approx((2.0, 0.05), rel=1e-6)
    assert result["loso_spearman_within_setting_mean"] == pytest.approx(1.0)  # the law is exact: ranks agree
    model = result["rules"]["long-run model | all"]
    # Each setting keeps the candidate with the lower main run: -0.02, -0.03, -0.03, -0.02 of a gap of 0.04.
    assert model["chosen"] == ["kl-softmin 2.00", "kl-softmin 0.50", "kl-softmin 2.00", "kl-softmin 0.50"]
    assert model["all"]["mean_gap_closed"] == pytest.approx((0.5 + 0.75 + 0.75 + 0.5) / 4)
    assert model["continued"]["mean_gap_closed"] == pytest.approx(0.5)
    always_mid = result["rules"]["always kl-softmin 1.00 | all"]
    assert always_mid["all"]["mean_gap_closed"] == pytest.approx(0.005 / 0.04)
    assert result["rules"]["always solution | all"]["all"]["mean_gap_closed"] == 0.0  # not measured: uniform kept
    assert len(points(draw["targets"][0])) == 3  # uniform is the reference, not a point
