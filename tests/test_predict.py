"""The long-run model (mixalign/mixture/predict.py) and the lag candidate: pure functions, no training."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mixalign.mixture.candidates import FAMILIES, candidate_mixtures, lag_mixture
from mixalign.mixture.predict import (
    concentration,
    fit_long_run,
    predict_change,
)


def test_concentration_is_kl_to_uniform():
    assert concentration(np.full(8, 1 / 8)) == 0.0
    assert concentration(np.eye(8)[3]) == pytest.approx(math.log(8), rel=1e-12)
    w = np.array([0.5, 0.25, 0.25, 0.0])
    assert concentration(w) == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(1.0), rel=1e-12)
    assert concentration(w * 7) == pytest.approx(concentration(w))  # unnormalised weights are normalised


def test_the_fit_recovers_the_coefficients_of_data_it_generated():
    rng = np.random.default_rng(0)
    r, conc = rng.normal(-0.1, 0.05, 40), rng.uniform(0, 1.5, 40)
    outcomes = 0.7 * r + 0.04 * conc
    a, b = fit_long_run(r, conc, outcomes)
    assert a == pytest.approx(0.7, rel=1e-9) and b == pytest.approx(0.04, rel=1e-9)
    w = np.array([0.7, 0.1, 0.1, 0.1])
    assert predict_change(-0.2, w, (a, b)) == pytest.approx(-0.14 + 0.04 * concentration(w), rel=1e-9)


def test_the_lag_mixture_recovers_a_mixture_whose_log_shares_are_the_lags():
    """Constructed case: a lag of c * log(own share) + d on each domain. With z the standardised lag,
    exp(z / t) is proportional to own exactly when t = c / std(lag); twice that gives sqrt(own)."""
    own = np.array([0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.01, 0.01])
    lag = 0.3 * np.log(own) + 2.0
    z_scale = lag.std() / 0.3
    w = lag_mixture(lag, 1.0 / z_scale)
    assert np.allclose(w, own, atol=1e-12)
    flatter = lag_mixture(lag, 2.0 / z_scale)
    assert np.allclose(flatter, np.sqrt(own) / np.sqrt(own).sum(), atol=1e-12)  # twice the temperature: sqrt


def test_unreadable_domains_keep_their_uniform_share_and_no_signal_is_uniform():
    lag = np.array([0.5, 0.1, np.nan, 0.3])
    w = lag_mixture(lag, 1.0, readable=np.array([True, True, True, False]))
    assert w[2] == w[3] == 0.25 and math.isclose(w.sum(), 1.0) and w[0] > w[1]
    assert np.allclose(lag_mixture(np.full(4, 0.2), 1.0), 0.25)
    c = candidate_mixtures(np.eye(4)[0], np.ones(4), domain_lag=np.array([0.4, 0.1, 0.2, 0.3]), families=("lag",))
    assert list(c) == ["uniform", "lag 2.00"]  # the default temperature
    c = candidate_mixtures(np.eye(4)[0], np.ones(4), domain_lag=np.array([0.4, 0.1, 0.2, 0.3]), families=("lag",),
                           lag_temperatures=(0.5, 1.0))
    assert list(c) == ["uniform", "lag 0.50", "lag 1.00"]
    assert "lag" in FAMILIES
