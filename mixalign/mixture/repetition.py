"""Repetition: how many times a mixture reads each domain's training tokens, and caps on it.

A short probe cannot see repetition: a small domain given a large share is read many times over
by the main run, and returns diminish with every pass (Muennighoff et al., 2023). Olmix-style
methods cap each domain's passes; `mixture.max_epochs` does so for every mixture the method
measures or returns, so what is measured is what is trained.
"""

from __future__ import annotations

import numpy as np


def passes(weights, round_tokens: int, domain_tokens) -> np.ndarray:
    """How many times the round reads each domain's training tokens on these weights (> 1: repetition)."""
    return np.asarray(weights, dtype=float) * round_tokens / np.maximum(np.asarray(domain_tokens, dtype=float), 1)


def share_caps(max_epochs: float, round_tokens: int, domain_tokens) -> np.ndarray:
    """The largest share of the round each domain can have and be read at most `max_epochs` times."""
    return max_epochs * np.maximum(np.asarray(domain_tokens, dtype=float), 1) / max(round_tokens, 1)


def cap_shares(weights, caps) -> np.ndarray:
    """The mixture nearest `weights` whose shares stay under `caps`: a capped domain keeps its cap and
    the rest share what it gave up in proportion to their weights (repeated until none exceeds its cap).

    When the caps sum to less than 1 no mixture fits: every domain gets its cap scaled up alike, so
    all are read the same number of times, as few as the round allows.
    """
    w = np.asarray(weights, dtype=float) / np.sum(weights)
    caps = np.asarray(caps, dtype=float)
    if caps.sum() <= 1:
        return caps / caps.sum()
    capped = np.zeros(len(w), dtype=bool)
    while True:
        over = ~capped & (w > caps + 1e-12)
        if not over.any():
            return w
        capped |= over
        free = 1 - caps[capped].sum()
        rest = w[~capped]
        w = np.where(capped, caps, 0.0)
        w[~capped] = rest / rest.sum() * free if rest.sum() > 0 else free / max((~capped).sum(), 1)
