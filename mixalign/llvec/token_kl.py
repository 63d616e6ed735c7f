"""Exact token-level KL between two models that share a tokenizer, on real text (docs/method.md, section 2).

At every scored position of every text (the sliding windows of `windows`, with the context of
the smaller model), both models give a full next-token distribution; the KL between them is
computed over the whole vocabulary, in both directions, and summed per text. The mean over texts
divided by B ln 2 is KL in bits per byte: what distillation minimises, calibrated (0 only for
identical models, no chunking effect), unlike the log-likelihood-vector distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import numpy as np
import torch

from mixalign.errors import MixalignError
from mixalign.llvec.windows import text_windows, window_batches
from mixalign.model.nanogpt import IGNORE_INDEX
from mixalign.progress import Progress
from mixalign.units import LN2

DistributionFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (inputs, keep) -> (n_kept, V) log-probs


def restrict_vocab(logprobs: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Log-probabilities over the first `vocab_size` ids only, renormalised.

    Model heads are often padded beyond the tokenizer (GPT-NeoX: 50,304 rows for 50,277 tokens);
    ids past the tokenizer never occur in text, so both models are compared on the tokenizer's ids.
    """
    if logprobs.shape[-1] < vocab_size:
        raise MixalignError(f"a model gives {logprobs.shape[-1]} next-token probabilities, fewer than the "
                         f"tokenizer's {vocab_size} ids")
    if logprobs.shape[-1] == vocab_size:
        return logprobs
    kept = logprobs[..., :vocab_size]
    return kept - torch.logsumexp(kept, dim=-1, keepdim=True)


def kl_both_ways(log_p: torch.Tensor, log_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(KL(p || q), KL(q || p)) in nats for each row of two (n, V) float32 log-distributions.

    One difference serves both directions: KL(p || q) = sum p (log p - log q) and
    KL(q || p) = -sum q (log p - log q). Rows are summed in float32 (V terms of one sign pattern,
    error ~1e-7 relative) and returned as float64 for the sums over positions.
    """
    difference = log_p - log_q
    p_to_q = (log_p.exp() * difference).sum(dim=-1)
    q_to_p = -(log_q.exp() * difference).sum(dim=-1)
    return p_to_q.to(torch.float64), q_to_p.to(torch.float64)


@dataclass
class TokenKL:
    """Per-text sums of exact per-position KL, in nats, both directions."""

    a_to_b: np.ndarray  # float64 (N,): sum over the text's scored positions of KL(p_a || p_b)
    b_to_a: np.ndarray  # float64 (N,): KL(p_b || p_a)
    positions: np.ndarray  # int64 (N,): scored positions per text
    a_logp: np.ndarray | None = None  # float64 (N,): log p_a(x), model a's log-likelihood of each text (same
    # positions: with a's own context it is a's log-likelihood-vector entry, so a caller need not score a again)


def exact_token_kl(
    distribution_a: DistributionFn,
    distribution_b: DistributionFn,
    token_ids: Sequence[Sequence[int]],
    context: int,
    vocab_size: int,
    bos_id: int | None = None,
    max_batch_tokens: int | None = None,
    device: str | torch.device = "cpu",
    progress: str | None = None,
) -> TokenKL:
    """Exact KL at every scored position of every text, summed per text (see the module docstring).

    distribution_x(inputs LongTensor[B, T], keep BoolTensor[B, T]) gives the (n_kept, V) next-token
    log-probabilities at the kept positions, in row-major order. `context` is the smaller model's.
    """
    windows = text_windows(token_ids, context, bos_id)
    n = len(token_ids)
    a_to_b, b_to_a, a_logp = (np.zeros(n, dtype=np.float64) for _ in range(3))
    positions = np.zeros(n, dtype=np.int64)
    report = Progress(progress, total=len(windows), unit="windows")
    with torch.inference_mode():
        for batch in window_batches(windows, max_batch_tokens, device):
            keep = batch.targets != IGNORE_INDEX
            full_a = distribution_a(batch.inputs, keep)
            log_a = restrict_vocab(full_a, vocab_size)
            log_b = restrict_vocab(distribution_b(batch.inputs, keep), vocab_size)
            # Row r of log_a/log_b belongs to batch row `owner[r]` (keep is read in row-major order).
            owner = batch.text_index[keep.nonzero()[:, 0].cpu().numpy()]
            picked = full_a.gather(1, batch.targets[keep].unsqueeze(1)).squeeze(1)  # over a's whole head, as scoring
            np.add.at(a_logp, owner, picked.to(torch.float64).cpu().numpy())
            del full_a  # with a padded head, restrict_vocab made a copy: keep one (n, V) block alive, not two
            forward, backward = kl_both_ways(log_a, log_b)
            np.add.at(a_to_b, owner, forward.cpu().numpy())
            np.add.at(b_to_a, owner, backward.cpu().numpy())
            np.add.at(positions, owner, 1)
            report.advance(len(batch.text_index))
    report.close()
    if not (np.isfinite(a_to_b).all() and np.isfinite(b_to_a).all()):
        raise MixalignError("non-finite token-level KL (a model produced NaN/inf)")
    return TokenKL(a_to_b, b_to_a, positions, a_logp)


@dataclass(frozen=True)
class KLMean:
    """A KL in bits per byte with its standard error over texts (or samples)."""

    bits_per_byte: float
    se: float
    n: int

    def __str__(self) -> str:
        return f"{self.bits_per_byte:.4f} +- {self.se:.4f}"


def mean_kl(per_text_nats, mean_bytes: float) -> KLMean:
    """mean(per-text KL) / (B ln 2), with SE = sample sd / sqrt(N) on the same scale."""
    values = np.asarray(per_text_nats, dtype=np.float64)
    if values.ndim != 1 or len(values) < 1:
        raise ValueError(f"need a 1-D array of per-text KL values, got shape {values.shape}")
    if not (math.isfinite(mean_bytes) and mean_bytes > 0):
        raise ValueError(f"mean_bytes must be a positive finite number, got {mean_bytes}")
    scale = mean_bytes * LN2
    se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return KLMean(float(values.mean() / scale), float(se / scale), len(values))


def per_domain_kl(per_text_nats, domains: Sequence[Hashable], n_bytes) -> dict[Hashable, KLMean]:
    """`mean_kl` within each domain, with that domain's own mean byte length; keys in first-seen order."""
    values = np.asarray(per_text_nats, dtype=np.float64)
    n_bytes = np.asarray(n_bytes, dtype=np.float64)
    if not len(values) == len(domains) == len(n_bytes):
        raise ValueError(f"need one domain and one byte length per text: N = {len(values)}, "
                         f"got {len(domains)} domains and {len(n_bytes)} byte lengths")
    labels = np.asarray(list(domains), dtype=object)
    return {d: mean_kl(values[labels == d], float(n_bytes[labels == d].mean())) for d in dict.fromkeys(domains)}
