"""The `mixture:` section: the target, and every setting and threshold of the method, each with its reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mixalign.errors import MixalignError
from mixalign.mixture.candidates import (
    CLOSING_TEMPERATURES,
    DEFAULT_CANDIDATES,
    FAMILIES,
    LAG_TEMPERATURES,
    SOFTMIN_SCALES,
)
from mixalign.paths import InputPath, plain
from mixalign.units import DEFAULT_SEED

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
            kl-softmin, lag, closing, response); uniform is always measured.
        softmin_scales: the temperatures of the kl-softmin candidates, in standard deviations of the
            domain probes' exact KL (lower: more concentrated).
        lag_temperatures: the temperatures of the lag candidates, in standard deviations of the model's
            per-domain lag behind the target (lower: more concentrated).
        closing_temperatures: the temperatures of the closing candidates, in standard deviations of the
            share of its lag each domain's own probe closes (lower: more concentrated).
        max_epochs: cap every mixture the method measures or returns so that the round reads no domain's
            training tokens more than this many times (as Olmix does; `repetition.py`); null: no cap.
        probe_learning_rate: peak learning rate of the probes (default: the model's).
        warmup_steps: from scratch: train this many steps on uniform weights before the first
            round (probes of a random model say little). They are the run's first steps.
        solver: ``direction`` (NNLS, the paper's) or ``distance`` (simplex least squares with the
            main run's schedule-aware step length).
        smoothing: a in w <- (1 - a) w + a * prior, before the candidates are measured.
        prior: ``uniform`` or ``natural``.
        rounds: re-probe and re-solve this many times over training (1 = once).
        selection: ``measured`` trains each candidate mixture (``candidates``) as a probe and keeps
            the one the long-run model predicts lowest, among those measurably closer than uniform
            (`selection.py`), else uniform; ``solver`` uses the solution as it is (the paper's).
        significance: a candidate is measurably closer than uniform when its probe beats uniform's
            by more than this many paired standard errors over the texts.
        long_run: (a, b) of the long-run model: main-run change against uniform (bits/byte) =
            a * probe margin + b * KL(w || uniform) (`predict.py`; fitted on the tuning draw by
            `benchmarks/tune.py`).
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
    candidates: list[str] = field(default_factory=lambda: list(DEFAULT_CANDIDATES))
    softmin_scales: tuple[float, ...] = SOFTMIN_SCALES
    lag_temperatures: tuple[float, ...] = LAG_TEMPERATURES
    closing_temperatures: tuple[float, ...] = CLOSING_TEMPERATURES
    max_epochs: float | None = None
    probe_learning_rate: float | None = None
    warmup_steps: int = 0
    solver: str = "direction"
    smoothing: float = 0.0
    prior: str = "uniform"
    rounds: int = 1
    selection: str = "measured"
    significance: float = 2.0
    long_run: tuple[float, float] = (2.95, 0.0176)  # benchmarks/tune.py on the whole tuning draw (BENCHMARKS.md)
    processes: int = 1
    max_batch_tokens: int | None = None
    cache_dir: str = "mixture_cache"
    seed: int = DEFAULT_SEED

    def __post_init__(self):
        self.target, self.textset = plain(self.target), plain(self.textset)
        for name, allowed in (("solver", SOLVERS), ("prior", PRIORS), ("selection", SELECTIONS)):
            if getattr(self, name) not in allowed:
                raise MixalignError(f"mixture.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.significance < 0:
            raise MixalignError(f"mixture.significance must be >= 0, got {self.significance}")
        if len(self.long_run) != 2:
            raise MixalignError(f"mixture.long_run must be two numbers (a, b), got {self.long_run!r}")
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
        if self.max_epochs is not None and self.max_epochs <= 0:
            raise MixalignError(f"mixture.max_epochs must be positive (or null: no cap), got {self.max_epochs}")
        if self.warmup_steps < 0:
            raise MixalignError(f"mixture.warmup_steps must be >= 0, got {self.warmup_steps}")
