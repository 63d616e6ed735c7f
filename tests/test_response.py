"""The share-response estimate (mixalign/mixture/response.py): pure functions, no training."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mixalign.mixture.response import (
    domain_gains,
    response_mixture,
    share_response,
    tilt_mixtures,
)


def synthetic_gains(alpha, beta, shares):
    """Gains of probes whose mixtures are the rows of `shares`, under G_k = alpha_k + beta_k log w_k."""
    return alpha + beta * np.log(shares)


def test_tilt_probes_move_uniform_half_way_toward_each_domain():
    t = tilt_mixtures(4)
    assert np.allclose(t.sum(axis=1), 1.0)
    assert np.allclose(np.diag(t), 0.5 / 4 + 0.5) and np.allclose(t[0, 1:], 0.5 / 4)


def test_domain_gains_are_summed_log_likelihood_gains_per_byte():
    values, base = np.array([-10.0, -20.0, -30.0, -5.0]), np.array([-12.0, -21.0, -30.0, -4.0])
    n_bytes = np.array([100, 300, 50, 50])
    g = domain_gains(values, base, ["a", "a", "b", "b"], n_bytes, ["a", "b", "c"])
    assert g[0] == pytest.approx((2.0 + 1.0) / 400) and g[1] == pytest.approx(-1.0 / 100)
    assert math.isnan(g[2])  # no text of c


@pytest.mark.parametrize("seed", range(5))
def test_the_fit_recovers_a_log_share_response(seed):
    rng = np.random.default_rng(seed)
    k = 6
    alpha, beta = rng.normal(0, 0.01, k), rng.uniform(0.002, 0.03, k)
    uniform = synthetic_gains(alpha, beta, np.full(k, 1 / k))
    tilts = synthetic_gains(alpha, beta, tilt_mixtures(k))
    a, b = share_response(uniform, tilts)
    assert np.allclose(a, alpha, atol=1e-12) and np.allclose(b, beta, atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_inverting_the_fit_at_a_longer_runs_gains_gives_its_mixture(seed):
    """A run that saw e^c times more tokens of every domain: gains alpha + beta (log w + c)."""
    rng = np.random.default_rng(seed)
    k = 7
    alpha, beta = rng.normal(0, 0.01, k), rng.uniform(0.002, 0.03, k)
    own = rng.dirichlet(np.full(k, 2.0))
    target = alpha + beta * (np.log(own) + math.log(5.0))
    assert np.allclose(response_mixture(target, alpha, beta, 1.0), own, atol=1e-12)
    flatter = own**0.25 / (own**0.25).sum()  # sharpness gamma: w ~ own^gamma
    assert np.allclose(response_mixture(target, alpha, beta, 0.25), flatter, atol=1e-12)
    assert np.allclose(response_mixture(target, alpha, beta, 0.0), 1 / k)
    rank = np.argsort(own)
    assert (np.diff(response_mixture(target, alpha, beta, 0.5)[rank]) >= 0).all()  # the ranking survives


def test_domains_that_cannot_be_read_keep_their_uniform_share():
    k = 5
    alpha, beta = np.zeros(k), np.full(k, 0.01)
    target = np.array([0.02, 0.01, 0.0, np.nan, 0.03])
    beta[2] = -0.004  # more of it made it worse: noise, not a response
    w = response_mixture(target, alpha, beta, 1.0, readable=np.array([True, True, True, True, False]))
    assert w[2] == w[3] == w[4] == pytest.approx(1 / k)  # beta <= 0, no gain, too few texts
    assert w.sum() == pytest.approx(1.0)
    assert w[0] / w[1] == pytest.approx(math.exp(1.0))  # the readable ones as the fit says
    assert np.allclose(response_mixture(target, alpha, beta, 1.0, readable=np.array([True] + [False] * 4)), 1 / k)
