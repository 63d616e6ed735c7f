"""Candidate mixtures: the generators the method measures against uniform (docs/method.md, section 3, step 5).

Each is a pure function of what the domain probes and the target's vector give: the paper's solution
and its shrinkages toward uniform, the natural mixture, `kl_softmin` (the domain probes' exact KL to the
target), `domain_softmax` over the model's lag behind the target on each domain (`lag`) or over the
share of that lag each domain's own probe closes (`closing`). The share-response estimate, which needs
probes of its own, is in `response.py`.
"""

from __future__ import annotations

import numpy as np

SHRINKAGES = (0.25, 0.5, 0.75)  # a in (1 - a) w + a * uniform
SOFTMIN_SCALES = (2.0,)  # temperatures of kl_softmin (standard deviations of the domain probes' KL): tuning draw
EXPLORED_SOFTMIN_SCALES = (0.5, 1.0, 2.0)  # the temperatures the tuning draw main-runs, to choose among
LAG_TEMPERATURES = (2.0,)  # temperatures of the lag candidates (standard deviations of the domains' lag): tuning draw
EXPLORED_LAG_TEMPERATURES = (0.5, 1.0, 2.0)  # the temperatures the tuning draw main-runs
CLOSING_TEMPERATURES = (1.0,)  # temperatures of the closing candidates (standard deviations of the closed shares): tuning draw
EXPLORED_CLOSING_TEMPERATURES = (0.5, 1.0, 2.0)  # the temperatures the tuning draw main-runs
PROBED = ("solution", "shrink", "kl-softmin", "closing")  # the generators that read the domain probes
FAMILIES = ("natural", "solution", "shrink", "kl-softmin", "lag", "closing", "response")  # candidate generators by name
DEFAULT_CANDIDATES = ("solution", "kl-softmin")  # with SOFTMIN_SCALES: the best replay on the tuning draw (tune.py)


def kl_softmin(domain_kl: np.ndarray, scale: float) -> np.ndarray:
    """Weights exp(-(k_d - min k) / (scale * std(k))), normalised: the domains whose probe ended
    closest to the target in exact KL get the most weight, and none is dropped outright.

    The vector solvers read the probes' moves in log-likelihood space, where a domain with few
    texts in the text set is nearly invisible (the demo's email: 2 of 1,000); exact KL measures
    every probe on every token, and on the robustness targets its ranking of the domain probes
    followed the target's own mixture where the vector solvers' weights did not.
    """
    domain_kl = np.asarray(domain_kl, dtype=float)
    spread = domain_kl.std()
    if not (np.isfinite(domain_kl).all() and spread > 0 and scale > 0):
        return np.full(len(domain_kl), 1.0 / len(domain_kl))
    w = np.exp(-(domain_kl - domain_kl.min()) / (scale * spread))
    return w / w.sum()


def domain_softmax(score: np.ndarray, temperature: float, readable: np.ndarray | None = None) -> np.ndarray:
    """Weights exp(z_d / temperature) over the readable domains with a finite score, z the standardised
    per-domain score; the other domains keep 1/K.

    Two scores use it. `lag`: the model's lag behind the target on each domain's texts (exact KL per
    byte, or the cross-entropy gap): more data where the model is farthest from the target, as DoReMi
    weights by excess loss over a reference model (here the target is the reference); no probe is
    needed. `closing`: the share of that lag which the domain's own probe closes (`measure.domain_closing`):
    more data where training on a domain moves the model toward the target on that domain.
    """
    score = np.asarray(score, dtype=float)
    k = len(score)
    ok = np.isfinite(score) if readable is None else np.isfinite(score) & np.asarray(readable, dtype=bool)
    weights = np.full(k, 1.0 / k)
    if ok.sum() < 2 or score[ok].std() == 0 or temperature <= 0:
        return weights
    z = (score[ok] - score[ok].mean()) / score[ok].std()
    share = np.exp((z - z.max()) / temperature)
    weights[ok] = share / share.sum() * ok.sum() / k  # the readable domains share what they had under uniform
    return weights


def candidate_mixtures(solution: np.ndarray, natural: np.ndarray, domain_kl: np.ndarray | None = None,
                       response: dict[str, np.ndarray] | None = None, domain_lag: np.ndarray | None = None,
                       readable: np.ndarray | None = None, families: tuple[str, ...] = FAMILIES,
                       softmin_scales: tuple[float, ...] = SOFTMIN_SCALES,
                       lag_temperatures: tuple[float, ...] = LAG_TEMPERATURES,
                       domain_closing: np.ndarray | None = None,
                       closing_temperatures: tuple[float, ...] = CLOSING_TEMPERATURES) -> dict[str, np.ndarray]:
    """The mixtures worth measuring, by name, uniform first; near-duplicates (a solution that is
    uniform) appear once. `families` names the generators to use (FAMILIES).

    With the domain probes' exact KL to the target (`domain_kl`), the `kl_softmin` family joins;
    with the model's per-domain lag behind the target, the `lag` family; with the share of it each
    domain's probe closes (`domain_closing`), the `closing` family; `response` adds the
    share-response estimates by name (`response.py`).
    """
    k = len(solution)
    uniform = np.full(k, 1.0 / k)
    named = {"uniform": uniform}
    if "natural" in families:
        named["natural"] = natural / natural.sum()
    if "solution" in families:
        named["solution"] = solution
    if "shrink" in families:
        named.update({f"shrink {a:.2f}": (1 - a) * solution + a * uniform for a in SHRINKAGES})
    if domain_kl is not None and "kl-softmin" in families:
        named.update({f"kl-softmin {s:.2f}": kl_softmin(domain_kl, s) for s in softmin_scales})
    if domain_lag is not None and "lag" in families:
        named.update({f"lag {t:.2f}": domain_softmax(domain_lag, t, readable) for t in lag_temperatures})
    if domain_closing is not None and "closing" in families:
        named.update({f"closing {t:.2f}": domain_softmax(domain_closing, t, readable) for t in closing_temperatures})
    named.update(response or {})
    return distinct(named)


def distinct(named: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The mixtures with near-duplicates dropped (the first name wins)."""
    kept: dict[str, np.ndarray] = {}
    for name, weights in named.items():
        if not any(np.allclose(weights, other, atol=1e-9) for other in kept.values()):
            kept[name] = weights
    return kept


def needs_domain_probes(families, selection: str) -> bool:
    """Whether the domain probes must run: for the paper's solver as the answer, or a generator that reads them."""
    return selection == "solver" or any(name in PROBED for name in families)
