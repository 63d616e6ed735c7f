"""The `mixture:` section: the target, and every setting and threshold of the method, each with its reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mixalign.errors import MixalignError
from mixalign.mixture.candidates import FAMILIES
from mixalign.paths import InputPath, plain

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
