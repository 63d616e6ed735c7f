"""Domain weights aligned with the target (SPEC section 3): probes -> A, t -> solver -> diagnostics.

`compute_mixture` is the whole method for one round; `write_weights` stores its result as the
YAML file that `data.weights:` reads (weights, diagnostics and provenance together).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from mixalign.data.datamodule import PileMixtureDataModule
from mixalign.io import atomic_path
from mixalign.llvec.estimators import centre
from mixalign.llvec.scoring import model_vector, score_gpt
from mixalign.llvec.textset import TextSet, load_textset, subset_textset
from mixalign.llvec.vectors import LogLikelihoodVector, load_vector, save_vector, vector_from_scores
from mixalign.mixture.probes import ProbeJob, ProbeSettings, probe_key, run_probes, state_fingerprint, train_steps
from mixalign.mixture.solvers import diagnose, linearity_check, smooth, solve_direction, solve_distance
from mixalign.model.nanogpt import GPT

SOLVERS = ("direction", "distance")
PRIORS = ("uniform", "natural")


@dataclass
class MixtureConfig:
    """The `mixture:` section of a config: how to compute the domain weights before training.

    Args:
        target: the target model (mixalign checkpoint, HF directory, or `.npz` vector); null
            disables the computation and `data.weights` is used as given.
        textset: text set for the log-likelihood vectors (``demo`` or a file).
        n_texts: use an evenly spaced subset of the text set (faster probes).
        probe_steps: S, optimizer steps of each probe.
        probe_learning_rate: constant learning rate of the probes (default: the model's peak).
        warmup_steps: from scratch only: uniform training of the fresh model before probing.
        solver: ``direction`` (NNLS, paper default) or ``distance`` (simplex LS with step ratio).
        smoothing: a in w <- (1 - a) w + a * prior.
        prior: ``uniform`` or ``natural``.
        rounds: re-probe from the current weights this many times over training (1 = once).
        linearity_check: also probe the chosen mixture and compare its move with A w.
        processes: probes run in this many worker processes.
        max_batch_tokens: scoring batch budget (default: by device).
        cache_dir: probe and base vectors are cached here.
        seed: fixes the probes' data order (independent of ``data.seed``, so runs that differ
            only in their training data order share one set of probes).
    """

    target: str | None = None
    textset: str = "demo"
    n_texts: int | None = None
    probe_steps: int = 40
    probe_learning_rate: float | None = None
    warmup_steps: int = 0
    solver: str = "direction"
    smoothing: float = 0.0
    prior: str = "uniform"
    rounds: int = 1
    linearity_check: bool = True
    processes: int = 1
    max_batch_tokens: int | None = None
    cache_dir: str = "mixture_cache"
    seed: int = 1337

    def __post_init__(self):
        if self.solver not in SOLVERS:
            raise ValueError(f"mixture.solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.prior not in PRIORS:
            raise ValueError(f"mixture.prior must be one of {PRIORS}, got {self.prior!r}")
        if not 0 <= self.smoothing <= 1:
            raise ValueError(f"mixture.smoothing must be in [0, 1], got {self.smoothing}")
        for name in ("probe_steps", "rounds", "processes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"mixture.{name} must be positive, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise ValueError(f"mixture.warmup_steps must be >= 0, got {self.warmup_steps}")


@dataclass
class MixtureResult:
    domains: list[str]
    weights: np.ndarray
    solver: str
    fell_back: bool
    domain_cosines: np.ndarray
    mixture_cosine: float
    relative_residual: float
    current_kl: float
    predicted_kl: float
    linearity: tuple[float, float] | None
    probes_trained: int
    provenance: dict = field(default_factory=dict)

    def table(self) -> str:
        """The diagnostics as a plain-text table (printed, and logged to TensorBoard as text)."""
        lines = [f"{'domain':<24} {'weight':>8} {'cos(Delta_k, t)':>16}"]
        for domain, weight, cosine in zip(self.domains, self.weights, self.domain_cosines):
            lines.append(f"{domain:<24} {weight:>8.4f} {cosine:>16.4f}")
        lines += [
            f"solver: {self.solver}{' (fell back to uniform: no mixture moves toward the target)' if self.fell_back else ''}",
            f"cos(A w, t) = {self.mixture_cosine:.4f}; relative residual ||t - A v*|| / ||t|| = {self.relative_residual:.4f}",
            f"KL to target now {self.current_kl:.4f} bits/byte; predicted after training {self.predicted_kl:.4f}",
        ]
        if self.linearity:
            lines.append(
                f"linearity check (probe of the chosen mixture vs A w): cosine {self.linearity[0]:.4f}, "
                f"norm ratio {self.linearity[1]:.4f}"
            )
        lines.append(f"probes trained this time: {self.probes_trained} (the rest came from the cache)")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "weights": {d: float(w) for d, w in zip(self.domains, self.weights)},
            "diagnostics": {
                "solver": self.solver,
                "fell_back_to_uniform": self.fell_back,
                "domain_cosines": {d: float(c) for d, c in zip(self.domains, self.domain_cosines)},
                "mixture_cosine": self.mixture_cosine,
                "relative_residual": self.relative_residual,
                "current_kl_bits_per_byte": self.current_kl,
                "predicted_kl_bits_per_byte": self.predicted_kl,
                "linearity_cosine": None if self.linearity is None else self.linearity[0],
                "linearity_norm_ratio": None if self.linearity is None else self.linearity[1],
            },
            "provenance": self.provenance,
        }


def compute_mixture(
    config: MixtureConfig,
    base: GPT,
    datamodule: PileMixtureDataModule,
    textset: TextSet,
    target: LogLikelihoodVector,
    settings: ProbeSettings,
    main_steps: int,
) -> MixtureResult:
    """One round of the method: probe every domain from `base`, solve for the weights, diagnose."""
    if target.textset_hash != textset.hash:
        raise ValueError(
            f"target vector ({target.model}) was scored on text set {target.textset_hash[:12]}, "
            f"not on {textset.hash[:12]}"
        )
    domains = datamodule.domains
    token_ids = datamodule.encode(textset.texts)
    base_state = {k: v.detach().cpu().clone() for k, v in base.state_dict().items()}
    fingerprint = state_fingerprint(base_state)
    cache = Path(config.cache_dir)
    common = dict(base=fingerprint, textset=textset.hash, data=datamodule.data.manifest["key"], settings=asdict(settings))

    base_path = cache / f"base-{probe_key(**common)}.npz"
    if base_path.exists():
        l0 = load_vector(base_path).values
    else:
        scored = score_gpt(base, token_ids, config.max_batch_tokens)
        l0 = scored.values
        save_vector(vector_from_scores(scored, textset, "base"), base_path)

    def job(name: str, weights: np.ndarray) -> ProbeJob:
        return ProbeJob(
            name=name, config=base.config, base_state=base_state,
            batches=datamodule.train_dataset(weights=weights, seed=settings.seed),
            token_ids=token_ids, textset=textset,
            settings=settings, max_batch_tokens=config.max_batch_tokens,
            path=cache / f"probe-{probe_key(**common, probe=name, weights=weights.round(12).tolist())}.npz",
        )

    jobs = [job(domain, np.eye(len(domains))[k]) for k, domain in enumerate(domains)]
    trained = sum(not j.path.exists() for j in jobs)
    probes = run_probes(jobs, config.processes)

    l0_t = torch.from_numpy(l0)
    A = torch.stack([centre(torch.from_numpy(p.values) - l0_t) for p in probes], dim=1)
    t = centre(torch.from_numpy(target.values) - l0_t)
    step_ratio = main_steps / settings.steps
    solved = solve_direction(A, t) if config.solver == "direction" else solve_distance(A, t, step_ratio)  # warns on fallback
    weights = solved.weights
    if config.smoothing > 0:
        prior = torch.ones(len(domains), dtype=torch.float64)
        if config.prior == "natural":
            prior = torch.tensor([float(datamodule.data.count(d, "train")) for d in domains])
        weights = smooth(weights, prior, config.smoothing)
    diagnostics = diagnose(A, t, weights, step_ratio, textset.mean_bytes)

    linearity = None
    if config.linearity_check:
        mixture_job = job("mixture", weights.numpy())
        trained += not mixture_job.path.exists()
        mixed = run_probes([mixture_job], 1)[0]
        linearity = linearity_check(centre(torch.from_numpy(mixed.values) - l0_t), A, weights)

    return MixtureResult(
        domains=list(domains),
        weights=weights.numpy(),
        solver=config.solver,
        fell_back=solved.fell_back,
        domain_cosines=diagnostics.domain_cosines.numpy(),
        mixture_cosine=diagnostics.mixture_cosine,
        relative_residual=diagnostics.relative_residual,
        current_kl=diagnostics.current_kl_bits_per_byte,
        predicted_kl=diagnostics.predicted_kl_bits_per_byte,
        linearity=linearity,
        probes_trained=trained,
        provenance={
            "base_fingerprint": fingerprint,
            "target": target.model,
            "textset_hash": textset.hash,
            "n_texts": len(textset.texts),
            "data_key": datamodule.data.manifest["key"],
            "probe": asdict(settings),
            "main_steps": main_steps,
            "step_ratio": step_ratio,
            "smoothing": config.smoothing,
            "prior": config.prior,
        },
    )


def align(config: MixtureConfig, module, datamodule: PileMixtureDataModule, main_steps: int,
          grad_clip: float | None) -> MixtureResult:
    """The method from the model's current weights: text set, target vector, probes, solve.

    `module` is the `NanoGPTModule` about to be trained (its optimizer settings are the probes'),
    so `mixalign weights` and `fit` compute identical weights from identical configs.
    """
    if config.target is None:
        raise ValueError("mixture.target is not set: name the target model (checkpoint, HF directory or .npz)")
    datamodule.setup("fit")
    textset = load_textset(config.textset)
    if config.n_texts:
        textset = subset_textset(textset, config.n_texts)
    datamodule.check_heldout(textset)
    target = model_vector(config.target, textset, config.cache_dir, config.max_batch_tokens)
    hp = module.hparams
    settings = ProbeSettings(
        steps=config.probe_steps,
        learning_rate=config.probe_learning_rate or hp.learning_rate,
        weight_decay=hp.weight_decay,
        betas=tuple(hp.betas),
        batch_size=datamodule.batch_size,
        block_size=datamodule.block_size,
        grad_clip=grad_clip,
        seed=config.seed,
    )
    if config.warmup_steps:
        uniform = np.full(len(datamodule.domains), 1 / len(datamodule.domains))
        warmup = ProbeSettings(**{**asdict(settings), "steps": config.warmup_steps, "learning_rate": hp.learning_rate})
        train_steps(module.model, datamodule.train_dataset(weights=uniform, seed=settings.seed), warmup)
    return compute_mixture(config, module.model, datamodule, textset, target, settings, main_steps)


def write_weights(result: MixtureResult, path: str | Path) -> Path:
    """Weights + diagnostics + provenance as YAML, and a bar chart PNG beside it; both atomic."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(result.to_dict(), sort_keys=False), encoding="utf-8")
    png = path.with_suffix(".png")
    _bar_chart(result, png)
    return png


def _bar_chart(result: MixtureResult, png: Path) -> None:
    import matplotlib.pyplot as plt

    from mixalign.llvec.plots import save_figure

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 0.4 * len(result.domains) + 1.5), sharey=True)
    y = np.arange(len(result.domains))
    left.barh(y, result.weights, color="C0")
    left.set_yticks(y, result.domains)
    left.set_xlabel("weight")
    left.set_title("domain weights")
    right.barh(y, result.domain_cosines, color=["C2" if c > 0 else "C3" for c in result.domain_cosines])
    right.axvline(0, color="0.5", lw=0.8)
    right.set_xlabel("cos(Delta_k, t)")
    right.set_title(f"alignment with the target (mixture: {result.mixture_cosine:.3f})")
    left.invert_yaxis()
    save_figure(figure, png)
    plt.close(figure)
