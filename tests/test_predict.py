"""The long-run model (mixalign/mixture/predict.py) and the lag candidate: pure functions, no training."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from mixalign.mixture.candidates import FAMILIES, candidate_mixtures, domain_softmax
from mixalign.mixture.measure import domain_closing
from mixalign.mixture.predict import (
    concentration,
    fit_long_run,
    predict_change,
)
from mixalign.units import LN2


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
    w = domain_softmax(lag, 1.0 / z_scale)
    assert np.allclose(w, own, atol=1e-12)
    flatter = domain_softmax(lag, 2.0 / z_scale)
    assert np.allclose(flatter, np.sqrt(own) / np.sqrt(own).sum(), atol=1e-12)  # twice the temperature: sqrt


def test_unreadable_domains_keep_their_uniform_share_and_no_signal_is_uniform():
    lag = np.array([0.5, 0.1, np.nan, 0.3])
    w = domain_softmax(lag, 1.0, readable=np.array([True, True, True, False]))
    assert w[2] == w[3] == 0.25 and math.isclose(w.sum(), 1.0) and w[0] > w[1]
    assert np.allclose(domain_softmax(np.full(4, 0.2), 1.0), 0.25)
    c = candidate_mixtures(np.eye(4)[0], np.ones(4), domain_lag=np.array([0.4, 0.1, 0.2, 0.3]), families=("lag",))
    assert list(c) == ["uniform", "lag 2.00"]  # the default temperature
    c = candidate_mixtures(np.eye(4)[0], np.ones(4), domain_lag=np.array([0.4, 0.1, 0.2, 0.3]), families=("lag",),
                           lag_temperatures=(0.5, 1.0))
    assert list(c) == ["uniform", "lag 0.50", "lag 1.00"]
    assert "lag" in FAMILIES


def _closing_case(exact: bool):
    """Three domains, two texts each (100 bytes). Per text, nats: the base lags 10 everywhere. The probe
    on a closes half of a's lag, b's closes a tenth of b's, c's moves away on c (lag 12) while closing
    most of the lag elsewhere: by its overall distance, c's probe is the best of the three."""
    domains = ["a", "b", "c"]
    lags = {"base": [10] * 6, "a": [5, 5, 8, 8, 8, 8], "b": [8, 8, 9, 9, 8, 8], "c": [4, 4, 4, 4, 12, 12]}
    target = np.full(6, -50.0)

    def result(lag):
        lag = np.array(lag, dtype=float)
        if exact:  # exact_bits averages both directions: give both the same lag, in bits
            return SimpleNamespace(exact=SimpleNamespace(a_to_b=lag / LN2, b_to_a=lag / LN2), vector=None)
        return SimpleNamespace(exact=None, vector=SimpleNamespace(values=target - lag))

    ctx = SimpleNamespace(textset=SimpleNamespace(domains=np.repeat(domains, 2), n_bytes=np.full(6, 100.0)),
                          datamodule=SimpleNamespace(domains=domains),
                          target=SimpleNamespace(vector=SimpleNamespace(values=target)))
    return domain_closing(ctx, result(lags["base"]), [result(lags[d]) for d in domains])


@pytest.mark.parametrize("exact", [True, False], ids=["exact KL", "cross-entropy gap"])
def test_closing_reads_each_probe_on_its_own_domain_only(exact):
    """Mutation: reading each probe's lag over all texts (its overall distance) instead of on its own
    domain's texts gives c (the best overall: 6.7 against 7.0 and 8.3) the most weight."""
    closing = _closing_case(exact)
    assert np.allclose(closing, [0.5, 0.1, -0.2], atol=1e-12)
    w = candidate_mixtures(np.eye(3)[2], np.ones(3), domain_closing=closing, families=("closing",))["closing 1.00"]
    assert w[0] > w[1] > w[2] and math.isclose(w.sum(), 1.0)


def test_closing_is_undefined_where_the_model_does_not_lag():
    ctx = SimpleNamespace(textset=SimpleNamespace(domains=np.array(["a", "b"]), n_bytes=np.full(2, 10.0)),
                          datamodule=SimpleNamespace(domains=["a", "b"]),
                          target=SimpleNamespace(vector=SimpleNamespace(values=np.array([-5.0, -5.0]))))
    base = SimpleNamespace(exact=None, vector=SimpleNamespace(values=np.array([-6.0, -4.0])))  # ahead of it on b
    probes = [SimpleNamespace(exact=None, vector=SimpleNamespace(values=np.array(v))) for v in ([-5.5, -4.0], [-6, -3.0])]
    closing = domain_closing(ctx, base, probes)
    assert closing[0] == pytest.approx(0.5) and np.isnan(closing[1])
