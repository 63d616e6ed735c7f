"""Every distance between two models that their form allows, named for what it is.

- log-likelihood-vector distance (Kishino et al.'s scale): from two vectors on one text set;
- exact KL on the text set, both directions: two models sharing a tokenizer;
- Monte Carlo KL, both directions: any two models, on request (it samples).

`mixalign kl` and `benchmarks/calibration.py` print these side by side.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from mixalign.llvec.estimators import KLEstimate, estimate_kl
from mixalign.llvec.models import LanguageModel, exact_kl_between, shares_tokenizer
from mixalign.llvec.montecarlo import MonteCarloKL, monte_carlo_kl
from mixalign.llvec.token_kl import KLMean, mean_kl, per_domain_kl
from mixalign.llvec.vectors import LogLikelihoodVector, check_same_textset
from mixalign.units import DEFAULT_SEED


@dataclass
class Measured:
    """One thing to compare: always a vector on the text set, and the model where there is one."""

    name: str
    vector: LogLikelihoodVector
    model: LanguageModel | None = None


@dataclass
class PairDistances:
    a: str
    b: str
    llvec: KLEstimate
    exact_a_to_b: KLMean | None = None
    exact_b_to_a: KLMean | None = None
    exact_by_domain: dict | None = None  # domain -> {"a_to_b": KLMean, "b_to_a": KLMean}
    mc_a_to_b: MonteCarloKL | None = None
    mc_b_to_a: MonteCarloKL | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def pair_distances(a: Measured, b: Measured, textset=None, mc_samples: int = 0, mc_seed: int = DEFAULT_SEED,
                   max_batch_tokens: int | None = None, progress: bool = False) -> PairDistances:
    """The distances between a and b that their form allows (see the module docstring)."""
    check_same_textset(a.vector, b.vector)
    llvec = estimate_kl(torch.from_numpy(a.vector.values), torch.from_numpy(b.vector.values), a.vector.mean_bytes)
    result = PairDistances(a.name, b.name, llvec)
    if a.model is None or b.model is None:
        return result
    if shares_tokenizer(a.model, b.model):
        kl = exact_kl_between(a.model, b.model, textset, max_batch_tokens,
                              progress=f"exact KL {a.name} / {b.name}" if progress else None)
        result.exact_a_to_b = mean_kl(kl.a_to_b, textset.mean_bytes)
        result.exact_b_to_a = mean_kl(kl.b_to_a, textset.mean_bytes)
        by_a, by_b = (per_domain_kl(v, textset.domains, textset.n_bytes) for v in (kl.a_to_b, kl.b_to_a))
        result.exact_by_domain = {d: {"a_to_b": by_a[d], "b_to_a": by_b[d]} for d in by_a}
    if mc_samples:
        result.mc_a_to_b = monte_carlo_kl(a.model, b.model, mc_samples, mc_seed, max_batch_tokens=max_batch_tokens,
                                          progress=progress)
        result.mc_b_to_a = monte_carlo_kl(b.model, a.model, mc_samples, mc_seed, max_batch_tokens=max_batch_tokens,
                                          progress=progress)
    return result
