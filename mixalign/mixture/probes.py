"""Probes (docs/method.md, section 3, step 2): short runs from the base on one domain (or one mixture) each.

Each probe trains a copy of the base for S steps on its weights and scores the result on the text
set; the probe's move in log-likelihood space, Delta_k = c(l(theta_k) - l(base)), is one column of A.
When the target is a model sharing the tokenizer, the probe's exact KL to the target is measured
too. Every probe's results are cached on disk under a key of everything that determines them, so
an interrupted computation resumes with the probes already done, and a re-run trains nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import zipfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mixalign.data.sampling import MixtureBatches
from mixalign.errors import DataError
from mixalign.io import atomic_path
from mixalign.llvec.models import score_and_exact_kl, shared_model
from mixalign.llvec.textset import TextSet
from mixalign.llvec.token_kl import TokenKL
from mixalign.llvec.vectors import (
    LogLikelihoodVector,
    load_vector,
    save_vector,
    vector_from_scores,
)
from mixalign.model.nanogpt import GPT, GPTConfig
from mixalign.model.optim import adamw, lr_at
from mixalign.progress import Progress


@dataclass(frozen=True)
class ProbeSettings:
    """How every probe trains: the main run's optimizer, S steps, and a learning-rate shape.

    decay_to: None keeps the learning rate constant (the domain probes: each measures a direction);
    a rate makes the probe a main run in miniature, warm-up then cosine decay to that rate, so it
    ends cooled down as the main run will (the candidate mixtures: each measures where it ends).
    """

    steps: int
    learning_rate: float
    weight_decay: float
    betas: tuple[float, float]
    batch_size: int
    block_size: int
    grad_clip: float | None
    seed: int
    decay_to: float | None = None
    warmup_steps: int = 0

    def __post_init__(self):
        if self.steps < 0:  # 0: the base itself, measured like a probe
            raise DataError(f"mixture.probe_steps must be positive, got {self.steps}")
        if self.learning_rate <= 0:
            raise DataError(f"mixture.probe_learning_rate must be positive, got {self.learning_rate}")

    def lr(self, step: int) -> float:
        if self.decay_to is None:
            return self.learning_rate
        return lr_at(step, self.learning_rate, self.decay_to, self.warmup_steps, self.steps)


def _autocast(device: torch.device, dtype: str | None):
    """The main run's mixed precision (bf16 on a bf16 GPU), or nothing."""
    return torch.autocast(device.type, dtype=getattr(torch, dtype)) if dtype else contextlib.nullcontext()


def train_steps(model: GPT, batches: MixtureBatches, settings: ProbeSettings, autocast: str | None = None,
                first_step: int = 0, last_step: int | None = None) -> GPT:
    """Steps [first_step, last_step) (default: all `settings.steps`) of AdamW on the model's device, as the
    main run's optimizer would take them: the learning rate and batches of those steps, a fresh optimizer state."""
    device = next(model.parameters()).device
    optimizer = adamw(model, settings.learning_rate, settings.weight_decay, settings.betas)
    model.train()
    for index in range(first_step, settings.steps if last_step is None else last_step):
        for group in optimizer.param_groups:
            group["lr"] = settings.lr(index)
        batch = batches.batch(index)
        with _autocast(device, autocast):
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

    name: str  # domain name, or a candidate mixture's name
    config: GPTConfig
    base_state: dict
    batches: MixtureBatches  # the probe's domain (or mixture) weights; pickles without token arrays
    token_ids: list[list[int]]
    textset: TextSet
    settings: ProbeSettings
    max_batch_tokens: int | None
    path: Path  # the cached vector; the exact KL sits beside it
    target: str | None = None  # a target model sharing the tokenizer: measure the probe's exact KL to it
    device: str = "cpu"
    autocast: str | None = None  # "bfloat16" where the main run trains in bf16-mixed

    @property
    def exact_path(self) -> Path:
        return self.path.with_name(self.path.name.removesuffix(".npz") + ".exact.npz")

    @property
    def done(self) -> bool:
        return self.path.exists() and (self.target is None or self.exact_path.exists())


@dataclass
class ProbeResult:
    vector: LogLikelihoodVector
    exact: TokenKL | None  # a_to_b: probe -> target, b_to_a: target -> probe
    trained_by: int | None = None  # the rank that trained it in this call; None: it came from the cache


@dataclass(frozen=True)
class Ranks:
    """This process among the run's processes (DDP, torchrun, SLURM).

    Pending probes are dealt round-robin, rank r taking every world-th, and the results gathered,
    so K probes on W processes take about ceil(K/W) probe times and every rank ends with the
    results one process would have.
    """

    rank: int = 0
    world: int = 1
    gather: Callable[[object], list] | None = None  # every rank's object, on every rank (a collective)


ONE_PROCESS = Ranks()


def gather_objects(obj: object) -> list:
    """`obj` from every rank of the default process group, in rank order."""
    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def _save_exact(kl: TokenKL, path: Path) -> None:
    with atomic_path(path) as tmp:
        np.savez(tmp, a_to_b=kl.a_to_b, b_to_a=kl.b_to_a, positions=kl.positions)


def _load_exact(path: Path) -> TokenKL:
    try:
        with np.load(path, allow_pickle=False) as z:
            return TokenKL(z["a_to_b"], z["b_to_a"], z["positions"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: unreadable cached probe KL ({exc}); delete it to measure again") from None


def run_probe(job: ProbeJob) -> ProbeResult:
    if job.done:
        return ProbeResult(load_vector(job.path), _load_exact(job.exact_path) if job.target else None)
    device = torch.device(job.device)
    model = GPT(job.config)
    model.load_state_dict(job.base_state)
    train_steps(model.to(device), job.batches, job.settings, job.autocast)
    with _autocast(device, job.autocast):
        target = shared_model(job.target, job.device) if job.target else None
        scores, exact = score_and_exact_kl(model, target, job.token_ids, job.max_batch_tokens)
        vector = vector_from_scores(scores, job.textset, f"probe {job.name}, {job.settings.steps} steps",
                                    meta={"probe": job.name, "settings": asdict(job.settings)})
    result = ProbeResult(vector, exact)
    _save_result(job, result)
    return result


def _save_result(job: ProbeJob, result: ProbeResult) -> None:
    if result.exact is not None:
        _save_exact(result.exact, job.exact_path)
    save_vector(result.vector, job.path)  # last: a cached vector means the whole probe is done


def _run_probe_in_worker(job_and_threads: tuple[ProbeJob, int]) -> None:
    job, threads = job_and_threads
    torch.set_num_threads(threads)
    run_probe(job)


def run_probes(jobs: list[ProbeJob], processes: int = 1, progress: str | None = "probes",
               ranks: Ranks = ONE_PROCESS) -> list[ProbeResult]:
    """Run probes (cached ones are just loaded): this rank's share of the pending ones, in
    `processes` worker processes when > 1, then every rank's results gathered onto every rank."""
    pending = [i for i, job in enumerate(jobs) if not job.done]
    if ranks.world > 1:
        pending = ranks.gather(pending)[0]  # rank 0's view, so every rank deals the same list
    mine = pending[ranks.rank::ranks.world]
    label = progress and (f"{progress} (rank {ranks.rank})" if ranks.world > 1 else progress)
    report = Progress(label if mine else None, total=len(mine), unit="trained")
    if processes > 1 and len(mine) > 1:
        threads = max(1, (os.cpu_count() or 1) // processes)
        with multiprocessing.get_context("spawn").Pool(min(processes, len(mine))) as pool:
            for _ in pool.imap_unordered(_run_probe_in_worker, [(jobs[i], threads) for i in mine]):
                report.advance()
    trained = {}
    for i in mine:
        fresh = not jobs[i].done
        trained[i] = replace(run_probe(jobs[i]), trained_by=ranks.rank)
        if fresh:
            report.advance()
    report.close()
    if ranks.world > 1:
        for share in ranks.gather(trained):
            for i, result in share.items():
                if not jobs[i].done:  # another node's cache: keep a copy, so a re-run here trains nothing
                    _save_result(jobs[i], result)
                trained.setdefault(i, result)
    return [trained[i] if i in trained else run_probe(job) for i, job in enumerate(jobs)]


def probe_key(**parts) -> str:
    """Cache key of a probe: a hash of everything that determines its results."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def state_fingerprint(state: dict) -> str:
    """Hash of a model's weights, so probes from different bases never share a cache entry."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]
