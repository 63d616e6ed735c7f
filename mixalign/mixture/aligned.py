"""Domain weights aligned with the target (SPEC section 3): probes -> A, t -> solver -> measured choice.

`compute_mixture` is the whole method for one round from a given model; `align` gathers its inputs
from the model about to be trained; `write_weights` stores the result as the YAML file that
`data.weights:` reads (weights, diagnostics, every candidate's measured distance, provenance), with
a bar chart beside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import time

import numpy as np
import torch
import yaml

from mixalign.errors import MixalignError
from mixalign.io import atomic_path
from mixalign.llvec.estimators import centre, to_bits_per_byte
from mixalign.llvec.models import model_vector, shared_model
from mixalign.llvec.textset import (
    FEW_TEXTS,
    TextSet,
    load_textset,
    resolve_textset,
    subset_textset,
)
from mixalign.llvec.token_kl import LN2
from mixalign.llvec.vectors import LogLikelihoodVector
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
from mixalign.mixture.cost import CostAccount, method_cost
from mixalign.mixture.response import SHARPNESS, domain_gains, response_mixture, share_response, tilt_mixtures
from mixalign.mixture.selection import FAMILIES, Measured, Selection, candidate_mixtures, paired_difference, select
from mixalign.mixture.solvers import (
    diagnose,
    linearity_check,
    smooth,
    solve_direction,
    solve_distance,
)
from mixalign.model.module import lr_at
from mixalign.model.nanogpt import GPT
from mixalign.paths import InputPath, plain, shown_path

SOLVERS = ("direction", "distance")
PRIORS = ("uniform", "natural")
SELECTIONS = ("measured", "solver")


@dataclass(eq=False)
class MixtureConfig:
    """The `mixture:` section: the target, and how the domain weights toward it are computed.

    Args:
        target: the target model (mixalign checkpoint, local Hugging Face directory, or `.npz`
            vector). Used to compute the weights when `data.weights: aligned`, and by the distance
            monitor (`kl:`) at every validation.
        textset: text set of the log-likelihood vectors and exact KL (``demo`` or a file).
        n_texts: use an evenly spaced subset of the text set (faster probes).
        probe_steps: S, optimizer steps of each domain probe.
        candidate_steps: optimizer steps of each candidate's probe (default: probe_steps).
        candidates: the candidate generators measured with ``measured`` (natural, solution, shrink,
            kl-softmin, lag, response); uniform is always measured.
        probe_learning_rate: peak learning rate of the probes (default: the model's).
        warmup_steps: from scratch: train this many steps on uniform weights before the first
            round (probes of a random model say little). They are the run's first steps.
        solver: ``direction`` (NNLS, the paper's) or ``distance`` (simplex least squares with the
            main run's schedule-aware step length).
        smoothing: a in w <- (1 - a) w + a * prior, before the candidates are measured.
        prior: ``uniform`` or ``natural``.
        rounds: re-probe and re-solve this many times over training (1 = once).
        selection: ``measured`` trains each candidate mixture (the solution, its shrinkages toward
            uniform, uniform, natural, the kl-softmin mixtures when exact KL is at hand, and the
            share-response estimates) as a probe, keeps uniform unless one is measurably better,
            and of those that are, the one closest to uniform among near-ties with the best;
            ``solver`` uses the solution as it is (the paper's).
        min_gain: with ``measured``, a candidate replaces uniform only if its probe is at least this
            fraction of uniform's distance closer to the target (and more than 2 paired SEs); a
            share-response estimate that gives every domain half to twice its uniform share needs
            only the 2 SEs when no candidate clears this.
        response: with ``measured``, one more probe per domain near uniform (its tilt) and the
            share-response candidates built from them (`mixalign/mixture/response.py`).
        processes: probes run in this many worker processes.
        max_batch_tokens: scoring batch budget (default: by device).
        cache_dir: probe results are cached here.
        seed: fixes the probes' data order (independent of ``data.seed``, so runs that differ
            only in their training data order share one set of probes).
    """

    target: InputPath | None = None
    textset: Literal["demo"] | InputPath = "demo"
    n_texts: int | None = None
    probe_steps: int = 40
    candidate_steps: int | None = None
    candidates: list[str] = field(default_factory=lambda: list(FAMILIES))
    probe_learning_rate: float | None = None
    warmup_steps: int = 0
    solver: str = "direction"
    smoothing: float = 0.0
    prior: str = "uniform"
    rounds: int = 1
    selection: str = "measured"
    min_gain: float = 0.1
    response: bool = True
    processes: int = 1
    max_batch_tokens: int | None = None
    cache_dir: str = "mixture_cache"
    seed: int = 1337

    def __post_init__(self):
        self.target, self.textset = plain(self.target), plain(self.textset)
        for name, allowed in (("solver", SOLVERS), ("prior", PRIORS), ("selection", SELECTIONS)):
            if getattr(self, name) not in allowed:
                raise MixalignError(f"mixture.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not 0 <= self.min_gain < 1:
            raise MixalignError(f"mixture.min_gain must be in [0, 1), got {self.min_gain}")
        if not 0 <= self.smoothing <= 1:
            raise MixalignError(f"mixture.smoothing must be in [0, 1], got {self.smoothing}")
        unknown = sorted(set(self.candidates) - set(FAMILIES))
        if unknown:
            raise MixalignError(f"mixture.candidates: unknown generator(s) {unknown}; known: {list(FAMILIES)}")
        if self.candidate_steps is not None and self.candidate_steps <= 0:
            raise MixalignError(f"mixture.candidate_steps must be positive, got {self.candidate_steps}")
        for name in ("probe_steps", "rounds", "processes"):
            if getattr(self, name) <= 0:
                raise MixalignError(f"mixture.{name} must be positive, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise MixalignError(f"mixture.warmup_steps must be >= 0, got {self.warmup_steps}")


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
class MixtureResult:
    domains: list[str]
    weights: np.ndarray  # the mixture to train on (the chosen candidate)
    solved: np.ndarray  # the solver's mixture (after smoothing)
    solver: str
    fell_back: bool
    domain_cosines: np.ndarray
    domain_exact_change: np.ndarray | None  # each domain probe's change of exact KL to the target
    mixture_cosine: float
    relative_residual: float
    step_ratio: float
    current_llvec: float
    predicted_llvec: float
    prediction_note: str  # empty when the prediction is worth showing
    current_exact: float | None
    linearity: tuple[float, float] | None
    candidates: list[Candidate]
    selection: Selection | None
    trained_by: dict[str, int]  # the probes trained this time, and the rank that trained each
    scarce: dict = field(default_factory=dict)  # data domains with fewer than FEW_TEXTS texts in the text set
    provenance: dict = field(default_factory=dict)
    cost: CostAccount | None = None

    @property
    def probes_trained(self) -> int:
        return len(self.trained_by)

    def probes_by_rank(self) -> dict[int, list[str]]:
        ranks = {}
        for name, rank in self.trained_by.items():
            ranks.setdefault(rank, []).append(name)
        return dict(sorted(ranks.items()))

    @property
    def chosen(self) -> str:
        return self.selection.chosen if self.selection else "solution"

    def table(self) -> str:
        """The diagnostics as plain text (printed, and logged to TensorBoard)."""
        return "\n".join(_table_lines(self))

    def to_dict(self) -> dict:
        as_floats = lambda v: None if v is None else {d: float(x) for d, x in zip(self.domains, v)}  # noqa: E731
        return {
            "weights": as_floats(self.weights),
            "chosen": self.chosen,
            "diagnostics": {
                "solver": self.solver,
                "solved_weights": as_floats(self.solved),
                "fell_back_to_uniform": self.fell_back,
                "domain_cosines": as_floats(self.domain_cosines),
                "domain_exact_kl_change": as_floats(self.domain_exact_change),
                "mixture_cosine": self.mixture_cosine,
                "relative_residual": self.relative_residual,
                "step_ratio": self.step_ratio,
                "llvec_distance_now": self.current_llvec,
                "llvec_distance_predicted": None if self.prediction_note else self.predicted_llvec,
                "prediction_note": self.prediction_note or None,
                "exact_kl_now": self.current_exact,
                "linearity_cosine": None if self.linearity is None else self.linearity[0],
                "linearity_norm_ratio": None if self.linearity is None else self.linearity[1],
                "selection": None if self.selection is None else asdict(self.selection),
                "candidates": [{**asdict(c), "weights": as_floats(c.weights)} for c in self.candidates],
                "scarce_in_textset": self.scarce or None,
                "probes_trained_by_rank": self.probes_by_rank(),
            },
            "provenance": self.provenance,
            "cost": None if self.cost is None else self.cost.to_dict(),
        }


def _table_lines(r: MixtureResult) -> list[str]:
    exact = r.domain_exact_change is not None
    lines = [f"{'domain':<24} {'weight':>8} {'solved':>8} {'cos(Delta_k, t)':>16}"
             + (f" {'exact KL change':>16}" if exact else "")]
    for k, domain in enumerate(r.domains):
        lines.append(f"{domain:<24} {r.weights[k]:>8.4f} {r.solved[k]:>8.4f} {r.domain_cosines[k]:>16.4f}"
                     + (f" {r.domain_exact_change[k]:>+16.4f}" if exact else ""))
    fallback = " (fell back to uniform: no mixture moves toward the target)" if r.fell_back else ""
    lines += [f"solver: {r.solver}{fallback}",
              f"cos(A w, t) = {r.mixture_cosine:.4f}; relative residual ||t - A v*|| / ||t|| = {r.relative_residual:.4f}",
              f"log-likelihood-vector distance (Kishino et al. scale) to the target now: {r.current_llvec:.4f} bits/byte"
              + (f"; KL, exact on the text set: {r.current_exact:.4f}" if r.current_exact is not None else "")]
    if r.prediction_note:
        lines.append(f"predicted after training: not shown: {r.prediction_note}")
    else:
        lines.append(f"predicted after training (linear model, {r.step_ratio:.1f} probe-lengths of the main run's "
                     f"schedule): log-likelihood-vector distance {r.predicted_llvec:.4f}")
    if r.linearity:
        lines.append(f"linearity (the solution's probe vs A w): cosine {r.linearity[0]:.4f}, norm ratio {r.linearity[1]:.4f}")
    if r.candidates:
        lines.append(f"{'candidate':<14} {'llvec':>8} {'(linear)':>9} {'exact KL ->target':>18} {'exact KL <-target':>18}")
        for c in r.candidates:
            ex = ("" if c.exact_to_target is None else f" {c.exact_to_target:>18.4f} {c.exact_from_target:>18.4f}")
            lines.append(f"{c.name:<14} {c.llvec:>8.4f} {c.predicted_llvec:>9.4f}{ex}")
        lines.append(f"chosen: {r.chosen} ({r.selection.reason})")
    if r.scarce:
        seen = ", ".join(f"{d} {n}" for d, n in r.scarce.items())
        lines.append(f"warning: the text set has fewer than {FEW_TEXTS} texts of {seen}: every distance here barely "
                     "sees these domains, so their weights rest on how training on them moves the other texts")
    by_rank = r.probes_by_rank()
    shares = f"; by rank: {', '.join(f'{k}: {len(v)}' for k, v in by_rank.items())}" if len(by_rank) > 1 else ""
    lines.append(f"probes trained this time: {r.probes_trained} (the rest came from the cache{shares})")
    if r.cost is not None:
        lines.append(r.cost.line())
    return lines


# -- the method ---------------------------------------------------------------------------------

@dataclass
class Target:
    """The target as the method sees it: its vector, and its spec when exact KL can be measured."""

    spec: str
    vector: LogLikelihoodVector
    exact: bool  # a model that shares the data's tokenizer


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


def _exact_bits(result: ProbeResult, mean_bytes: float) -> np.ndarray:
    """Per-text exact KL, the mean of both directions, on the bits/byte scale (its mean is the distance)."""
    return (result.exact.a_to_b + result.exact.b_to_a) / 2 / (mean_bytes * LN2)


def _llvec_terms(values: np.ndarray, target: np.ndarray, mean_bytes: float) -> np.ndarray:
    """Per-text terms of the log-likelihood-vector distance: their mean is the estimate (bits/byte)."""
    c = centre(torch.from_numpy(values - target)).numpy()
    return c**2 / 2 / (mean_bytes * LN2)


def _probe_response(ctx: ProbeContext, base: ProbeResult, settings: ProbeSettings, processes: int):
    """The tilt probes near uniform and the share-response candidates they give (`response.py`).

    Returns (candidates by name, probe results by probe name).
    """
    domains = ctx.datamodule.domains
    k = len(domains)
    jobs = [ctx.job("candidate uniform", np.full(k, 1.0 / k), settings)]  # the candidate's own probe, cached
    jobs += [ctx.job(f"tilt {d}", w, settings) for d, w in zip(domains, tilt_mixtures(k))]
    results = run_probes(jobs, processes, progress="tilts", ranks=ctx.ranks)
    gains = lambda values: domain_gains(values, base.vector.values, ctx.textset.domains,  # noqa: E731
                                        ctx.textset.n_bytes, domains)
    alpha, beta = share_response(gains(results[0].vector.values), np.stack([gains(r.vector.values) for r in results[1:]]))
    scarce = ctx.textset.scarce_domains(domains)
    readable = np.array([d not in scarce for d in domains])
    target = gains(ctx.target.vector.values)
    named = {f"response {g:.2f}": response_mixture(target, alpha, beta, g, readable) for g in SHARPNESS}
    return named, dict(zip([job.name for job in jobs], results))


def domain_lag(ctx: ProbeContext, base: ProbeResult) -> np.ndarray:
    """Per domain: how far the model lags the target on its texts, per byte: exact KL when it can be
    measured, else the cross-entropy gap (the target's log-likelihood minus the model's)."""
    values = (_exact_bits(base, 1.0) if base.exact is not None
              else ctx.target.vector.values - base.vector.values)
    return domain_gains(values, np.zeros_like(values), ctx.textset.domains, ctx.textset.n_bytes, ctx.datamodule.domains)


def _measure_candidates(ctx: ProbeContext, solution: np.ndarray, settings: ProbeSettings, A, t, ratio: float,
                        config: MixtureConfig, domain_kl: np.ndarray | None, lag: np.ndarray,
                        response: dict[str, np.ndarray]):
    """Train every candidate mixture as a probe and measure it.

    Returns (candidates, selection, probe results by probe name).
    """
    domains = ctx.datamodule.domains
    natural = np.array([float(ctx.datamodule.data.count(d, "train")) for d in domains])
    readable = np.array([d not in ctx.textset.scarce_domains(domains) for d in domains])
    named = candidate_mixtures(solution, natural, domain_kl, response, lag, readable, tuple(config.candidates))
    jobs = [ctx.job(f"candidate {n}", w, settings) for n, w in named.items()]
    results = run_probes(jobs, progress="candidates", ranks=ctx.ranks)
    B, lT = ctx.textset.mean_bytes, ctx.target.vector.values
    candidates, measured = [], []
    for (name, weights), result in zip(named.items(), results):
        predicted = ((t - ratio * (A @ torch.from_numpy(weights))) ** 2).mean().item() / 2
        exact = _exact_bits(result, B) if result.exact is not None else None
        to_t, from_t = ((float(v.mean() / (B * LN2)) for v in (result.exact.a_to_b, result.exact.b_to_a))
                        if exact is not None else (None, None))
        terms = _llvec_terms(result.vector.values, lT, B)
        measured.append(Measured(name, weights, exact if exact is not None else terms))
        margin, se = paired_difference(measured[-1], measured[0])  # uniform is measured first
        candidates.append(Candidate(name, weights, float(terms.mean()), to_t, from_t, to_bits_per_byte(predicted, B),
                                    margin, se if name != "uniform" else 0.0))
    selection = select(measured, "exact KL" if ctx.target.exact else "log-likelihood-vector distance",
                       min_gain=config.min_gain, near_uniform=frozenset(response))
    return candidates, selection, dict(zip([job.name for job in jobs], results))


def _prediction_note(current: float, predicted: float, linearity) -> str:
    """Why the linear model's forecast should not be shown, or '' when it may be."""
    if predicted > current:
        return (f"the linear model puts this mixture at {predicted:.4f}, farther from the target than the model is now "
                f"({current:.4f}): it extrapolates the probes' moves past the target, so it is no forecast")
    if linearity is not None and (linearity[0] < 0.9 or not 0.8 <= linearity[1] <= 1.25):
        return (f"the solution's own probe moved unlike A w (cosine {linearity[0]:.2f}, norm ratio "
                f"{linearity[1]:.2f}): the linear model does not hold here")
    return ""


def _probe_domains(config: MixtureConfig, ctx: ProbeContext, settings: ProbeSettings):
    """The base's vector and one probe per domain; A's columns are the probes' centred moves.

    Returns (base result, domain probe results, A, t, probe results by probe name).
    """
    domains = ctx.datamodule.domains
    jobs = [ctx.job("base", np.full(len(domains), 1 / len(domains)), ProbeSettings(**{**asdict(settings), "steps": 0}))]
    jobs += [ctx.job(domain, np.eye(len(domains))[k], settings) for k, domain in enumerate(domains)]
    base, *probes = results = run_probes(jobs, config.processes, ranks=ctx.ranks)
    l0 = torch.from_numpy(base.vector.values)
    A = torch.stack([centre(torch.from_numpy(p.vector.values) - l0) for p in probes], dim=1)
    t = centre(torch.from_numpy(ctx.target.vector.values) - l0)
    return base, probes, A, t, dict(zip([job.name for job in jobs], results))


def _solve(config: MixtureConfig, ctx: ProbeContext, A, t, step_ratio: float):
    """The solver's mixture, smoothed toward the prior: (solver result, weights as numpy)."""
    solved = solve_direction(A, t) if config.solver == "direction" else solve_distance(A, t, step_ratio)
    weights = solved.weights
    if config.smoothing > 0:
        prior = torch.ones(len(ctx.datamodule.domains), dtype=torch.float64)
        if config.prior == "natural":
            prior = torch.tensor([float(ctx.datamodule.data.count(d, "train")) for d in ctx.datamodule.domains])
        weights = smooth(weights, prior, config.smoothing)
    return solved, weights.numpy()


def compute_mixture(config: MixtureConfig, ctx: ProbeContext, domain_settings: ProbeSettings,
                    candidate_settings: ProbeSettings, step_ratio: float, main_tokens: int) -> MixtureResult:
    """One round of the method from `ctx.base`: probe every domain, solve, measure candidates, choose.

    step_ratio: the main run's learning-rate sum over the round divided by a domain probe's;
    main_tokens: the training tokens of the round it designs (for the cost account).
    """
    started = time.perf_counter()
    base, probes, A, t, every_probe = _probe_domains(config, ctx, domain_settings)
    solved, weights = _solve(config, ctx, A, t, step_ratio)
    B = ctx.textset.mean_bytes
    diagnostics = diagnose(A, t, weights, step_ratio, B)
    exact_now = float(_exact_bits(base, B).mean()) if base.exact is not None else None
    domain_exact = (np.array([float(_exact_bits(p, B).mean()) - exact_now for p in probes])
                    if base.exact is not None else None)
    candidates, selection, linearity, chosen = [], None, None, weights
    if config.selection == "measured":
        candidate_ratio = sum(map(candidate_settings.lr, range(candidate_settings.steps))) / (
            domain_settings.steps * domain_settings.learning_rate)
        response, tilts = (_probe_response(ctx, base, candidate_settings, config.processes)
                           if config.response and "response" in config.candidates else ({}, {}))
        candidates, selection, results = _measure_candidates(ctx, weights, candidate_settings, A, t, candidate_ratio,
                                                             config, domain_exact, domain_lag(ctx, base), response)
        every_probe.update(tilts)
        every_probe.update({name: r for name, r in results.items() if name not in tilts})  # uniform: the tilts' run
        solution = results.get("candidate solution")
        if solution is not None:
            l0 = torch.from_numpy(base.vector.values)
            linearity = linearity_check(centre(torch.from_numpy(solution.vector.values) - l0),
                                        candidate_ratio * A, torch.from_numpy(weights))
        chosen = next(c.weights for c in candidates if c.name == selection.chosen)
    current, predicted = diagnostics.current_kl_bits_per_byte, _predict(A, t, chosen, step_ratio, B)
    cost = method_cost(len(probes), domain_settings.steps, len(candidates), candidate_settings.steps,
                       sum(name.startswith("tilt ") for name in every_probe), domain_settings.batch_size
                       * domain_settings.block_size, sum(map(len, ctx.token_ids)), base.exact is not None,
                       main_tokens, time.perf_counter() - started)
    return MixtureResult(
        domains=list(ctx.datamodule.domains), weights=chosen, solved=weights, solver=config.solver, fell_back=solved.fell_back,
        domain_cosines=diagnostics.domain_cosines.numpy(), domain_exact_change=domain_exact,
        mixture_cosine=diagnostics.mixture_cosine, relative_residual=diagnostics.relative_residual,
        step_ratio=step_ratio, current_llvec=current, predicted_llvec=predicted,
        prediction_note=_prediction_note(current, predicted, linearity), current_exact=exact_now,
        linearity=linearity, candidates=candidates, selection=selection,
        trained_by={name: r.trained_by for name, r in every_probe.items() if r.trained_by is not None},
        scarce=ctx.textset.scarce_domains(ctx.datamodule.domains),
        provenance=_provenance(config, ctx, domain_settings, candidate_settings, step_ratio), cost=cost,
    )


def _predict(A, t, weights: np.ndarray, step_ratio: float, mean_bytes: float) -> float:
    """The linear model's vector distance after the main run: mean((t - g A w)^2) / 2, in bits/byte."""
    return to_bits_per_byte(((t - step_ratio * (A @ torch.from_numpy(weights))) ** 2).mean().item() / 2, mean_bytes)


def _provenance(config: MixtureConfig, ctx: ProbeContext, domain_settings, candidate_settings, step_ratio) -> dict:
    """What determined these weights, with the target and text set as the user named them."""
    return {
        "base_fingerprint": ctx.fingerprint,
        "target": shown_path(config.target),
        "textset": shown_path(config.textset),
        "textset_hash": ctx.textset.hash,
        "n_texts": len(ctx.textset),
        "data_key": ctx.datamodule.data.manifest["key"],
        "probe": asdict(domain_settings),
        "candidate_probe": asdict(candidate_settings) if config.selection == "measured" else None,
        "step_ratio": step_ratio,
        "smoothing": config.smoothing,
        "prior": config.prior,
        "selection": config.selection,
        "response": config.response and config.selection == "measured",
    }


# -- inputs from the run ------------------------------------------------------------------------

def load_target(config: MixtureConfig, textset: TextSet, tokenizer_id: str) -> Target:
    """The target's vector on the text set (cached), and whether exact KL to it can be measured."""
    if config.target is None:
        raise MixalignError("mixture.target is not set: name the target model (checkpoint, HF directory or .npz)")
    vector = model_vector(config.target, textset, config.cache_dir, config.max_batch_tokens)
    exact = not str(config.target).endswith(".npz") and shared_model(str(config.target), "cpu").tokenizer_id == tokenizer_id
    return Target(str(config.target), vector, exact)


def probe_settings(config: MixtureConfig, hp, datamodule, grad_clip: float | None,
                   max_steps: int) -> tuple[ProbeSettings, ProbeSettings]:
    """(domain probes: constant rate; candidates: the main run's warm-up and decay, compressed)."""
    peak = config.probe_learning_rate or hp.learning_rate
    domain = ProbeSettings(steps=config.probe_steps, learning_rate=peak, weight_decay=hp.weight_decay,
                           betas=tuple(hp.betas), batch_size=datamodule.batch_size, block_size=datamodule.block_size,
                           grad_clip=grad_clip, seed=config.seed)
    steps = config.candidate_steps or config.probe_steps
    return domain, ProbeSettings(**{**asdict(domain), "steps": steps, "decay_to": peak * hp.min_lr / hp.learning_rate,
                                    "warmup_steps": max(1, round(steps * hp.warmup_steps / max_steps))})


def step_ratio(hp, begin: int, end: int, max_steps: int, settings: ProbeSettings) -> float:
    """How many domain-probe lengths the main run travels over [begin, end), by summed learning rate."""
    decay = hp.lr_decay_steps or max_steps
    main = sum(lr_at(s, hp.learning_rate, hp.min_lr, hp.warmup_steps, decay) for s in range(begin, end))
    return main / (settings.steps * settings.learning_rate)


def align(config: MixtureConfig, module, datamodule, begin: int, end: int, max_steps: int,
          grad_clip: float | None, device: str = "cpu", autocast: str | None = None,
          ranks: Ranks = ONE_PROCESS, accumulate: int = 1) -> MixtureResult:
    """The method from the model's current weights, for the round [begin, end) of a run of max_steps.

    `module` is the `NanoGPTModule` being trained (its optimizer settings are the probes'), so
    `mixalign weights` and `fit` compute identical weights from identical configs.
    """
    datamodule.setup("fit")
    textset = load_textset(resolve_textset(config.textset))
    textset = subset_textset(textset, config.n_texts) if config.n_texts else textset
    datamodule.check_heldout(textset)
    target = load_target(config, textset, datamodule.tokenizer_id)
    domain, candidate = probe_settings(config, module.hparams, datamodule, grad_clip, max_steps)
    ctx = ProbeContext(module.model, datamodule, textset, target, Path(config.cache_dir), config.max_batch_tokens,
                       device, autocast, ranks)
    tokens_per_step = datamodule.batch_size * datamodule.block_size * ranks.world * accumulate
    return compute_mixture(config, ctx, domain, candidate, step_ratio(module.hparams, begin, end, max_steps, domain),
                           (end - begin) * tokens_per_step)


def write_weights(result: MixtureResult, path: str | Path) -> Path:
    """Weights + diagnostics + candidates + provenance as YAML, and a bar chart PNG beside it; both atomic."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(result.to_dict(), sort_keys=False), encoding="utf-8")
    png = path.with_suffix(".png")
    from mixalign.mixture.plots import bar_chart

    bar_chart(result, png)
    return png


