"""Probes (SPEC section 3, step 2): short runs from the base on one domain each.

Each probe trains a copy of the base for S steps on its domain alone and scores the result on the
text set; the probe's move in log-likelihood space, Delta_k = c(l(theta_k) - l(base)), is one
column of A. Every probe's vector is cached on disk under a key of everything that determines
it, so an interrupted computation resumes with the probes already done, and a re-run with the
same inputs trains nothing.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from mixalign.data.sampling import MixtureBatches
from mixalign.llvec.scoring import score_gpt
from mixalign.llvec.textset import TextSet
from mixalign.llvec.vectors import LogLikelihoodVector, load_vector, save_vector, vector_from_scores
from mixalign.model.module import param_groups
from mixalign.model.nanogpt import GPT, GPTConfig


@dataclass(frozen=True)
class ProbeSettings:
    steps: int
    learning_rate: float
    weight_decay: float
    betas: tuple[float, float]
    batch_size: int
    block_size: int
    grad_clip: float | None
    seed: int

    def __post_init__(self):
        if self.steps <= 0:
            raise ValueError(f"mixture.probe_steps must be positive, got {self.steps}")
        if self.learning_rate <= 0:
            raise ValueError(f"mixture.probe_learning_rate must be positive, got {self.learning_rate}")


def train_steps(model: GPT, batches: MixtureBatches, settings: ProbeSettings) -> GPT:
    """`settings.steps` AdamW steps at a constant learning rate, as the main run's optimizer would take."""
    optimizer = torch.optim.AdamW(
        param_groups(model, settings.weight_decay), lr=settings.learning_rate, betas=tuple(settings.betas)
    )
    device = next(model.parameters()).device
    model.train()
    for index in range(settings.steps):
        batch = batches.batch(index)
        loss = -model.token_logprobs(batch["input"].to(device), batch["target"].to(device)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
    return model.eval()


@dataclass
class ProbeJob:
    """Everything one probe needs, picklable so probes can run in worker processes."""

    name: str  # domain name, or "mixture" for the linearity check
    config: GPTConfig
    base_state: dict
    batches: MixtureBatches  # the probe's domain (or mixture) weights; pickles without token arrays
    token_ids: list[list[int]]
    textset: TextSet
    settings: ProbeSettings
    max_batch_tokens: int | None
    path: Path


def run_probe(job: ProbeJob) -> LogLikelihoodVector:
    if job.path.exists():
        return load_vector(job.path)
    model = GPT(job.config)
    model.load_state_dict(job.base_state)
    train_steps(model, job.batches, job.settings)
    result = score_gpt(model, job.token_ids, job.max_batch_tokens)
    vector = vector_from_scores(
        result, job.textset, f"probe {job.name}, {job.settings.steps} steps",
        meta={"probe": job.name, "settings": asdict(job.settings)},
    )
    save_vector(vector, job.path)
    return vector


def _run_probe_in_worker(job_and_threads: tuple[ProbeJob, int]) -> LogLikelihoodVector:
    job, threads = job_and_threads
    torch.set_num_threads(threads)
    return run_probe(job)


def run_probes(jobs: list[ProbeJob], processes: int = 1) -> list[LogLikelihoodVector]:
    """Run probes (cached ones are just loaded), in `processes` worker processes when > 1."""
    pending = [job for job in jobs if not job.path.exists()]
    if processes > 1 and len(pending) > 1:
        threads = max(1, (os.cpu_count() or 1) // processes)
        with multiprocessing.get_context("spawn").Pool(min(processes, len(pending))) as pool:
            pool.map(_run_probe_in_worker, [(job, threads) for job in pending])
    return [run_probe(job) for job in jobs]


def probe_key(**parts) -> str:
    """Cache key of a probe: a hash of everything that determines its vector."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def state_fingerprint(state: dict) -> str:
    """Hash of a model's weights, so probes from different bases never share a cache entry."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]
