"""The method for one round (docs/method.md, section 3): probes -> A, t -> solver -> candidates -> measured choice.

`compute_mixture` is the whole method from a given model; `align` gathers its inputs from the
model about to be trained (the same call from `mixalign weights` and `fit`)."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from mixalign.errors import MixalignError
from mixalign.llvec.estimators import centre, to_bits_per_byte
from mixalign.llvec.models import model_vector, shared_model
from mixalign.llvec.textset import (
    TextSet,
    load_textset,
    resolve_textset,
    subset_textset,
)
from mixalign.mixture.config import MixtureConfig
from mixalign.mixture.cost import method_cost
from mixalign.mixture.measure import (
    ProbeContext,
    Target,
    domain_closing,
    domain_lag,
    exact_bits,
    measure_candidates,
    probe_response,
)
from mixalign.mixture.probes import (
    ONE_PROCESS,
    ProbeSettings,
    Ranks,
    run_probes,
)
from mixalign.mixture.repetition import cap_shares, share_caps
from mixalign.mixture.result import MixtureResult
from mixalign.mixture.solvers import (
    diagnose,
    linearity_check,
    smooth,
    solve_direction,
    solve_distance,
)
from mixalign.model.optim import lr_at
from mixalign.paths import shown_path


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
    base, *probes = results = run_probes(jobs, config.processes, progress=f"domain probes ({settings.steps} steps each)",
                                         ranks=ctx.ranks)
    l0 = torch.from_numpy(base.vector.values)
    A = torch.stack([centre(torch.from_numpy(p.vector.values) - l0) for p in probes], dim=1)
    t = centre(torch.from_numpy(ctx.target.vector.values) - l0)
    return base, probes, A, t, dict(zip([job.name for job in jobs], results))


def _solve(config: MixtureConfig, ctx: ProbeContext, A, t, step_ratio: float, caps: np.ndarray | None):
    """The solver's mixture, smoothed toward the prior and capped: (solver result, weights as numpy)."""
    solved = solve_direction(A, t) if config.solver == "direction" else solve_distance(A, t, step_ratio)
    weights = solved.weights
    if config.smoothing > 0:
        prior = torch.ones(len(ctx.datamodule.domains), dtype=torch.float64)
        if config.prior == "natural":
            prior = torch.tensor([float(ctx.datamodule.data.count(d, "train")) for d in ctx.datamodule.domains])
        weights = smooth(weights, prior, config.smoothing)
    return solved, weights.numpy() if caps is None else cap_shares(weights.numpy(), caps)


def compute_mixture(config: MixtureConfig, ctx: ProbeContext, domain_settings: ProbeSettings,
                    candidate_settings: ProbeSettings, step_ratio: float, main_tokens: int) -> MixtureResult:
    """One round of the method from `ctx.base`: probe every domain, solve, measure candidates, choose.

    step_ratio: the main run's learning-rate sum over the round divided by a domain probe's;
    main_tokens: the training tokens of the round it designs (for the cost account).
    """
    started = time.perf_counter()
    base, probes, A, t, every_probe = _probe_domains(config, ctx, domain_settings)
    caps = (None if config.max_epochs is None else share_caps(
        config.max_epochs, main_tokens, [ctx.datamodule.data.count(d, "train") for d in ctx.datamodule.domains]))
    solved, weights = _solve(config, ctx, A, t, step_ratio, caps)
    B = ctx.textset.mean_bytes
    diagnostics = diagnose(A, t, weights, step_ratio, B)
    exact_now = float(exact_bits(base, B).mean()) if base.exact is not None else None
    domain_exact = (np.array([float(exact_bits(p, B).mean()) - exact_now for p in probes])
                    if base.exact is not None else None)
    candidates, selection, linearity, chosen = [], None, None, weights
    if config.selection == "measured":
        candidate_ratio = sum(map(candidate_settings.lr, range(candidate_settings.steps))) / (
            domain_settings.steps * domain_settings.learning_rate)
        response, tilts = (probe_response(ctx, base, candidate_settings, config.processes)
                           if "response" in config.candidates else ({}, {}))
        candidates, selection, results = measure_candidates(ctx, weights, candidate_settings, A, t, candidate_ratio,
                                                             config, domain_exact, domain_lag(ctx, base), response,
                                                             domain_closing(ctx, base, probes), caps)
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
                       * domain_settings.block_size, sum(map(len, ctx.token_ids)),
                       ctx.target.repeat_cost if base.exact is not None else None, main_tokens,
                       time.perf_counter() - started)
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
        "candidates": list(config.candidates) if config.selection == "measured" else None,
        "long_run": list(config.long_run),
    }



# -- inputs from the run ------------------------------------------------------------------------

def load_target(config: MixtureConfig, textset: TextSet, tokenizer_id: str) -> Target:
    """The target's vector on the text set (cached), and whether exact KL to it can be measured."""
    if config.target is None:
        raise MixalignError("mixture.target is not set: name the target model (checkpoint, HF directory or .npz)")
    vector = model_vector(config.target, textset, config.cache_dir, config.max_batch_tokens)
    if str(config.target).endswith(".npz"):
        return Target(str(config.target), vector, False)
    model = shared_model(str(config.target), "cpu")
    return Target(str(config.target), vector, model.tokenizer_id == tokenizer_id, model.repeat_cost)


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
