"""Measuring mixtures against the target: the probes' shared context, the domain probes (A and t),
the model's per-domain lag, and each candidate mixture trained as a probe and measured (docs/method.md, section 3,
steps 2 and 6)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from mixalign.llvec.estimators import centre, to_bits_per_byte
from mixalign.llvec.textset import (
    TextSet,
)
from mixalign.llvec.vectors import LogLikelihoodVector
from mixalign.mixture.candidates import candidate_mixtures, distinct
from mixalign.mixture.config import MixtureConfig
from mixalign.mixture.probes import (
    ONE_PROCESS,
    ProbeJob,
    ProbeResult,
    ProbeSettings,
    Ranks,
    probe_key,
    run_probes,
    state_fingerprint,
)
from mixalign.mixture.repetition import cap_shares
from mixalign.mixture.response import (
    SHARPNESS,
    domain_gains,
    response_mixture,
    share_response,
    tilt_mixtures,
)
from mixalign.mixture.selection import Measured, paired_difference, select
from mixalign.model.nanogpt import GPT
from mixalign.units import LN2


@dataclass
class Target:
    """The target as the method sees it: its vector, and its spec when exact KL can be measured."""

    spec: str
    vector: LogLikelihoodVector
    exact: bool  # a model that shares the data's tokenizer
    repeat_cost: float = 1.0  # the target reading the text set again, in forward passes (memoized: its head only)


@dataclass
class Candidate:
    """A candidate mixture after its probe: measured distances and the linear model's forecast."""

    name: str
    weights: np.ndarray
    llvec: float  # log-likelihood-vector distance to the target (bits/byte)
    exact_to_target: float | None  # exact KL(probe || target), bits/byte
    exact_from_target: float | None  # exact KL(target || probe)
    predicted_llvec: float  # what the linear model A w predicted for this probe
    margin: float  # its distance minus uniform's after the probes, paired over the texts (negative: closer)
    margin_se: float  # the paired standard error of that margin


@dataclass
class ProbeContext:
    """What every probe of one round shares: the base, the data, the text set, the device."""

    base: GPT
    datamodule: object  # PileMixtureDataModule
    textset: TextSet
    target: Target
    cache: Path
    max_batch_tokens: int | None
    device: str = "cpu"
    autocast: str | None = None
    ranks: Ranks = ONE_PROCESS

    def __post_init__(self):
        self.token_ids = self.datamodule.encode(self.textset.texts)
        self.base_state = {k: v.detach().cpu().clone() for k, v in self.base.state_dict().items()}
        self.fingerprint = state_fingerprint(self.base_state)

    def job(self, name: str, weights: np.ndarray, settings: ProbeSettings) -> ProbeJob:
        key = probe_key(base=self.fingerprint, textset=self.textset.hash, data=self.datamodule.data.manifest["key"],
                        settings=asdict(settings), probe=name, weights=np.round(weights, 12).tolist(),
                        target=self.target.spec if self.target.exact else None)
        return ProbeJob(
            name=name, config=self.base.config, base_state=self.base_state,
            batches=self.datamodule.train_dataset(weights=weights, seed=settings.seed), token_ids=self.token_ids,
            textset=self.textset, settings=settings, max_batch_tokens=self.max_batch_tokens,
            path=self.cache / f"probe-{key}.npz", target=self.target.spec if self.target.exact else None,
            device=self.device, autocast=self.autocast,
        )


def exact_bits(result: ProbeResult, mean_bytes: float) -> np.ndarray:
    """Per-text exact KL, the mean of both directions, on the bits/byte scale (its mean is the distance)."""
    return (result.exact.a_to_b + result.exact.b_to_a) / 2 / (mean_bytes * LN2)


def llvec_terms(values: np.ndarray, target: np.ndarray, mean_bytes: float) -> np.ndarray:
    """Per-text terms of the log-likelihood-vector distance: their mean is the estimate (bits/byte)."""
    c = centre(torch.from_numpy(values - target)).numpy()
    return c**2 / 2 / (mean_bytes * LN2)


def probe_response(ctx: ProbeContext, base: ProbeResult, settings: ProbeSettings, processes: int):
    """The tilt probes near uniform and the share-response candidates they give (`response.py`).

    Returns (candidates by name, probe results by probe name).
    """
    domains = ctx.datamodule.domains
    k = len(domains)
    jobs = [ctx.job("candidate uniform", np.full(k, 1.0 / k), settings)]  # the candidate's own probe, cached
    jobs += [ctx.job(f"tilt {d}", w, settings) for d, w in zip(domains, tilt_mixtures(k))]
    results = run_probes(jobs, processes, progress=f"tilt probes ({settings.steps} steps each)", ranks=ctx.ranks)
    gains = lambda values: domain_gains(values, base.vector.values, ctx.textset.domains,  # noqa: E731
                                        ctx.textset.n_bytes, domains)
    alpha, beta = share_response(gains(results[0].vector.values), np.stack([gains(r.vector.values) for r in results[1:]]))
    scarce = ctx.textset.scarce_domains(domains)
    readable = np.array([d not in scarce for d in domains])
    target = gains(ctx.target.vector.values)
    named = {f"response {g:.2f}": response_mixture(target, alpha, beta, g, readable) for g in SHARPNESS}
    return named, dict(zip([job.name for job in jobs], results))


def _lag_values(ctx: ProbeContext, result: ProbeResult) -> np.ndarray:
    """Per text: how far a probed model lags the target, in nats (exact KL, else the cross-entropy gap)."""
    return exact_bits(result, 1.0) * LN2 if result.exact is not None else ctx.target.vector.values - result.vector.values


def domain_lag(ctx: ProbeContext, base: ProbeResult) -> np.ndarray:
    """Per domain: how far the model lags the target on its texts, per byte: exact KL when it can be
    measured, else the cross-entropy gap (the target's log-likelihood minus the model's)."""
    values = _lag_values(ctx, base)
    return domain_gains(values, np.zeros_like(values), ctx.textset.domains, ctx.textset.n_bytes, ctx.datamodule.domains)


def domain_closing(ctx: ProbeContext, base: ProbeResult, probes: list[ProbeResult]) -> np.ndarray:
    """Per domain: the share of the model's lag behind the target on the domain's own texts that the
    domain's own probe closes (negative: the probe moved away there). NaN where the model does not lag.

    A probe on a domain the target was trained on moves the model toward the target on that domain's
    texts; on a domain the target saw little, it specialises the model where the target is generic
    and moves it away. The share is read on the domain's own texts, so what every probe learns
    everywhere (the early model's target-independent progress) is not counted.
    """
    lag = domain_lag(ctx, base)
    after = np.array([domain_lag(ctx, probe)[k] for k, probe in enumerate(probes)])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(lag > 0, (lag - after) / lag, np.nan)


def measure_candidates(ctx: ProbeContext, solution: np.ndarray, settings: ProbeSettings, A, t, ratio: float,
                        config: MixtureConfig, domain_kl: np.ndarray | None, lag: np.ndarray,
                        response: dict[str, np.ndarray], closing: np.ndarray | None = None,
                        caps: np.ndarray | None = None):
    """Train every candidate mixture as a probe and measure it (each within `caps`, the shares
    `mixture.max_epochs` allows, where set).

    Returns (candidates, selection, probe results by probe name).
    """
    domains = ctx.datamodule.domains
    natural = np.array([float(ctx.datamodule.data.count(d, "train")) for d in domains])
    readable = np.array([d not in ctx.textset.scarce_domains(domains) for d in domains])
    named = candidate_mixtures(solution, natural, domain_kl, response, lag, readable, tuple(config.candidates),
                               tuple(config.softmin_scales), tuple(config.lag_temperatures), closing,
                               tuple(config.closing_temperatures))
    if caps is not None:
        named = distinct({name: cap_shares(w, caps) for name, w in named.items()})
    jobs = [ctx.job(f"candidate {n}", w, settings) for n, w in named.items()]
    results = run_probes(jobs, progress=f"candidate probes ({settings.steps} steps each)", ranks=ctx.ranks)
    B, lT = ctx.textset.mean_bytes, ctx.target.vector.values
    candidates, measured = [], []
    for (name, weights), result in zip(named.items(), results):
        predicted = ((t - ratio * (A @ torch.from_numpy(weights))) ** 2).mean().item() / 2
        exact = exact_bits(result, B) if result.exact is not None else None
        to_t, from_t = ((float(v.mean() / (B * LN2)) for v in (result.exact.a_to_b, result.exact.b_to_a))
                        if exact is not None else (None, None))
        terms = llvec_terms(result.vector.values, lT, B)
        measured.append(Measured(name, weights, exact if exact is not None else terms))
        margin, se = paired_difference(measured[-1], measured[0])  # uniform is measured first
        candidates.append(Candidate(name, weights, float(terms.mean()), to_t, from_t, to_bits_per_byte(predicted, B),
                                    margin, se if name != "uniform" else 0.0))
    selection = select(measured, "exact KL" if ctx.target.exact else "log-likelihood-vector distance",
                       config.long_run, config.significance)
    return candidates, selection, dict(zip([job.name for job in jobs], results))
