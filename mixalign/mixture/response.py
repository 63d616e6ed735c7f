"""Domain weights from each domain's response to its own share (ours, beyond the paper).

The direction solver reads single-domain probes, which are far from any mixture worth training on:
a model trained on one domain alone forgets the others, and near uniform that nonlinearity is all
the solver sees (docs/method.md, section 3, step 5). Here the probes stay near uniform instead: one **tilt**
probe per domain, trained on u + TILT (e_k - u), plus the uniform probe, all on the main run's
schedule in miniature. On the texts of domain k, the per-byte log-likelihood gain over the base
then follows the share of k in the probe's mixture, and is fit as

    G_k(w) = alpha_k + beta_k log w_k      (least squares over the uniform and the K tilt probes).

A longer run sees more tokens of every domain; if its gain depends on the tokens seen, it adds the
same log-factor c to every log w_k. Inverting the fit at the target's gains g_k gives
log w_k = (g_k - alpha_k) / beta_k - c, and c is fixed by sum(w) = 1: a softmax. The sensitivity
beta grows over a run several times a probe's length, so the inverted weights come out too sharp
(their ranking of the domains, not their spread, is what the probes measure well): the candidate
is this estimate flattened by a `sharpness` exponent gamma, w_k ~ exp(gamma (g_k - alpha_k) / beta_k),
measured like every other candidate (`selection.py`). gamma = 0.25 was chosen on exploratory
main runs (not shipped as a script) toward four targets of the published robustness draw
(BENCHMARKS.md, "Robustness"), where it did better than 0.5 and where 1 ended worse than
uniform; the held-out draw is the check on targets it was not chosen on.

A domain whose gains cannot be read (fewer than FEW_TEXTS texts in the text set, or a fitted
beta <= 0: more of it did not help it) keeps its uniform share 1/K.
Pure functions on arrays.
"""

from __future__ import annotations

import numpy as np

TILT = 0.5  # tilt probe of domain k: (1 - TILT) * uniform + TILT * e_k
SHARPNESS = (0.25,)  # gamma: 1 would be the fit's own inversion, far too sharp over a run 5-10x a probe's length


def tilt_mixtures(k: int, tilt: float = TILT) -> np.ndarray:
    """Row j: the tilt probe of domain j, uniform moved `tilt` of the way toward domain j alone."""
    return (1 - tilt) * np.full((k, k), 1.0 / k) + tilt * np.eye(k)


def domain_gains(values: np.ndarray, base: np.ndarray, text_domains, n_bytes: np.ndarray,
                 domains: list[str]) -> np.ndarray:
    """Per domain: the summed log-likelihood gain over the base on its texts, per byte (nats/byte).

    NaN for a domain with no text. Summing before dividing weights each text by its length, so a
    domain's gain is its cross-entropy change on the text set.
    """
    gain = np.asarray(values, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    text_domains = np.asarray(text_domains)
    out = np.full(len(domains), np.nan)
    for k, domain in enumerate(domains):
        mine = text_domains == domain
        if mine.any():
            out[k] = gain[mine].sum() / n_bytes[mine].sum()
    return out


def share_response(uniform_gains: np.ndarray, tilt_gains: np.ndarray,
                   tilt: float = TILT) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, beta): each domain's gain as alpha_k + beta_k log(its share), fit over K + 1 probes.

    tilt_gains[j, k]: the gain on domain k of the tilt probe of domain j. Domain k's share is
    1/K in the uniform probe, (1 - tilt)/K + tilt in its own tilt and (1 - tilt)/K in the others.
    """
    tilt_gains = np.asarray(tilt_gains, dtype=np.float64)
    k = len(uniform_gains)
    if tilt_gains.shape != (k, k):
        raise ValueError(f"tilt_gains must be {k} x {k} (tilt probe x domain), got {tilt_gains.shape}")
    shares = np.vstack([np.full(k, 1.0 / k), tilt_mixtures(k, tilt)])  # probe x domain
    gains = np.vstack([uniform_gains, tilt_gains])
    x = np.log(shares)
    x_centred = x - x.mean(axis=0)
    beta = (x_centred * (gains - gains.mean(axis=0))).sum(axis=0) / (x_centred**2).sum(axis=0)
    alpha = gains.mean(axis=0) - beta * x.mean(axis=0)
    return alpha, beta


def response_mixture(target_gains: np.ndarray, alpha: np.ndarray, beta: np.ndarray, sharpness: float,
                     readable: np.ndarray | None = None) -> np.ndarray:
    """w_k ~ exp(sharpness * (g_k - alpha_k) / beta_k) over the readable domains; the others keep 1/K.

    Uniform when fewer than two domains can be read (nothing to compare).
    """
    target_gains, alpha, beta = (np.asarray(v, dtype=np.float64) for v in (target_gains, alpha, beta))
    k = len(target_gains)
    ok = np.isfinite(target_gains) & np.isfinite(alpha) & np.isfinite(beta) & (beta > 0)
    if readable is not None:
        ok &= np.asarray(readable, dtype=bool)
    weights = np.full(k, 1.0 / k)
    if ok.sum() < 2:
        return weights
    score = sharpness * (target_gains[ok] - alpha[ok]) / beta[ok]
    share = np.exp(score - score.max())
    weights[ok] = share / share.sum() * ok.sum() / k  # the readable domains share what they had under uniform
    return weights
