"""Ancestral sampling and Monte Carlo KL between any two models, any tokenizers (docs/method.md, section 2).

KL(a || b) = E_{x ~ a}[log p_a(x) - log p_b(x)]: draw M documents from a (temperature 1, from a
document start, until the end token or `max_new_tokens`), decode them to text, score the text
with both models (each with its own tokenizer, from its own document start, with its own end
token when the sample ended), and divide the mean log-ratio by the mean byte length.

With a shared tokenizer two lower-noise figures come too: the same log-ratio on the sampled
token paths themselves (no re-encoding), and the exact per-position KL summed along each path,
which has the same expectation as the path log-ratio (chain rule) with far less variance. Both
estimate the KL between the models' distributions over token sequences up to the horizon
(`max_new_tokens`), the reported figure (`headline`). The text-level figure estimates that KL only
as far as decoding and re-encoding give back the sampled tokens (`canonical`); across tokenizers it
is the only figure, and is labelled so.

Each sequence's draws come from its own generator, seeded by (seed, sequence index), and are
taken by inverting the CDF: a sample does not depend on the batch it was drawn in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from mixalign.errors import MixalignError
from mixalign.llvec.scoring import score_token_ids
from mixalign.llvec.token_kl import KLMean, exact_token_kl, restrict_vocab
from mixalign.progress import Progress
from mixalign.units import LN2

StepFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Samples:
    token_ids: list[list[int]]  # sampled ids after the document start; the end token last if finished
    finished: np.ndarray  # bool (M,): the sample drew the end token within max_new_tokens
    logprob: np.ndarray  # float64 (M,): log p(sampled ids | document start) under the sampling model


def _sampling_distribution(log_p: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """What the next token is drawn from: log_p / temperature, cut to the top_k ids, renormalised."""
    if temperature == 1.0 and top_k is None:
        return log_p
    scaled = log_p / temperature
    if top_k is not None and top_k < scaled.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, -math.inf)
    return torch.log_softmax(scaled, dim=-1)


def sample_sequences(
    decoder: Callable[[], StepFn],
    prompt: Sequence[int],
    eos_id: int | None,
    vocab_size: int,
    n: int,
    max_new_tokens: int,
    seed: int,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: str | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
) -> Samples:
    """Draw `n` continuations of `prompt` (ids: a document start, then any prompt tokens) by ancestral
    sampling (see the module docstring); temperature 1 and no top_k sample the model itself, as the
    Monte Carlo KL needs. `Samples.logprob` is always under the model itself.

    decoder() makes a fresh incremental decoder: step(new ids (B, t)) -> next-token log-probs (B, V).
    """
    if n < 1 or max_new_tokens < 1:
        raise ValueError(f"need n >= 1 samples of max_new_tokens >= 1 tokens, got n={n}, max_new_tokens={max_new_tokens}")
    if not temperature > 0 or (top_k is not None and top_k < 1):
        raise MixalignError(f"need temperature > 0 and top_k >= 1, got temperature={temperature}, top_k={top_k}")
    token_ids: list[list[int]] = []
    finished = np.zeros(n, dtype=bool)
    logprob = np.zeros(n, dtype=np.float64)
    report = Progress(progress, total=n, unit="samples")
    with torch.inference_mode():
        for first in range(0, n, batch_size):
            rows = range(first, min(n, first + batch_size))
            uniforms = torch.from_numpy(np.stack([np.random.default_rng([seed, i]).random(max_new_tokens) for i in rows]))
            step = decoder()
            log_p = step(torch.tensor([list(prompt)] * len(rows), dtype=torch.long, device=device))
            drawn, done = [], torch.zeros(len(rows), dtype=torch.bool)
            total = torch.zeros(len(rows), dtype=torch.float64)
            for t in range(max_new_tokens):
                log_p = restrict_vocab(log_p, vocab_size).double().cpu()
                cdf = _sampling_distribution(log_p, temperature, top_k).exp().cumsum(dim=-1)
                u = (uniforms[:, t] * cdf[:, -1]).unsqueeze(1)
                token = torch.searchsorted(cdf, u).squeeze(1).clamp_(max=vocab_size - 1)
                total += torch.where(done, 0.0, log_p.gather(1, token.unsqueeze(1)).squeeze(1))
                drawn.append(torch.where(done, -1, token))
                if eos_id is not None:
                    done |= token == eos_id
                if bool(done.all()) or t + 1 == max_new_tokens:
                    break
                log_p = step(token.unsqueeze(1).to(device))
            drawn_ids = torch.stack(drawn, dim=1).tolist()
            for k, i in enumerate(rows):
                token_ids.append([tok for tok in drawn_ids[k] if tok >= 0])
                finished[i] = bool(done[k])
                logprob[i] = float(total[k])
            report.advance(len(rows))
    report.close()
    return Samples(token_ids, finished, logprob)


def ratio_kl(log_ratio_nats, n_bytes) -> KLMean:
    """sum(log-ratio) / sum(bytes) / ln 2, with the delta-method SE of a ratio of means."""
    d = np.asarray(log_ratio_nats, dtype=np.float64)
    b = np.asarray(n_bytes, dtype=np.float64)
    if len(d) != len(b) or len(d) < 1 or b.sum() <= 0:
        raise ValueError(f"need as many byte lengths as samples and some bytes: {len(d)} samples, {len(b)} lengths")
    ratio = d.sum() / b.sum()
    se = (d - ratio * b).std(ddof=1) / math.sqrt(len(d)) / b.mean() if len(d) > 1 else float("nan")
    return KLMean(float(ratio / LN2), float(se / LN2), len(d))


@dataclass(frozen=True)
class MonteCarloKL:
    """KL(a || b) in bits per byte from samples of a; path figures only with a shared tokenizer."""

    text: KLMean  # decoded text scored by both models, each with its own tokenizer
    path: KLMean | None  # log p_a - log p_b of the sampled token paths
    path_exact: KLMean | None  # exact per-position KL summed along the sampled paths
    mean_bytes: float
    finished: float  # share of samples that drew the end token
    canonical: float | None  # share whose text re-encodes to the sampled tokens
    horizon: int  # the longest sample in tokens: the KL is between distributions of sequences up to this

    @property
    def headline(self) -> KLMean:
        """The figure to report: the exact KL along the sampled paths where the tokenizer is shared
        (unbiased per sequence, the least noisy), else the text-level figure."""
        return self.path_exact if self.path_exact is not None else self.text

    @property
    def label(self) -> str:
        return ("along the sampled token paths" if self.path_exact is not None
                else "text-level: samples re-encoded by each model's tokenizer")


def _document_ids(model, texts: Sequence[str], finished: np.ndarray) -> list[list[int]]:
    """Each text as `model` reads a whole document: its document start, its tokens, its end token."""
    end = [model.eos_id] if model.eos_id is not None else []
    return [[model.doc_start_id] + ids + (end if done else []) for ids, done in zip(model.encode_batch(texts), finished)]


def _text_logprobs(model, ids: list[list[int]], max_batch_tokens: int | None) -> np.ndarray:
    return score_token_ids(model.logprob_fn, ids, model.context, max_batch_tokens=max_batch_tokens,
                           device=model.device).values


def monte_carlo_kl(a, b, n_samples: int, seed: int, max_new_tokens: int | None = None,
                   batch_size: int = 64, max_batch_tokens: int | None = None, progress: bool = False) -> MonteCarloKL:
    """KL(a || b) from `n_samples` documents sampled from `a` (`LanguageModel`s; see the module docstring)."""
    for model in (a, b):
        if model.doc_start_id is None:
            raise MixalignError(f"{model.description}: its tokenizer has no BOS or end-of-text token to start a document from")
    shared = a.tokenizer_id == b.tokenizer_id and a.doc_start_id == b.doc_start_id
    limit = min(a.context, b.context) if shared else a.context
    max_new_tokens = min(max_new_tokens or limit, limit)
    samples = sample_sequences(a.decoder, [a.doc_start_id], a.eos_id, a.vocab_size, n_samples, max_new_tokens, seed,
                               batch_size, a.device, progress=f"sampling from {a.description}" if progress else None)
    ends = [ids[:-1] if done else ids for ids, done in zip(samples.token_ids, samples.finished)]
    texts = [a.decode(ids) for ids in ends]
    n_bytes = np.array([len(t.encode("utf-8")) for t in texts], dtype=np.int64)
    log_ratio = (_text_logprobs(a, _document_ids(a, texts, samples.finished), max_batch_tokens)
                 - _text_logprobs(b, _document_ids(b, texts, samples.finished), max_batch_tokens))
    path = path_exact = canonical = None
    if shared:
        paths = [[a.doc_start_id] + ids for ids in samples.token_ids]
        path = ratio_kl(_text_logprobs(a, paths, max_batch_tokens) - _text_logprobs(b, paths, max_batch_tokens), n_bytes)
        along = exact_token_kl(a.distribution_fn, b.distribution_fn, paths, limit, a.vocab_size,
                               max_batch_tokens=max_batch_tokens, device=a.device)
        path_exact = ratio_kl(along.a_to_b, n_bytes)
        canonical = float(np.mean([enc == ids for enc, ids in zip(a.encode_batch(texts), ends)]))
    return MonteCarloKL(
        text=ratio_kl(log_ratio, n_bytes), path=path, path_exact=path_exact, mean_bytes=float(n_bytes.mean()),
        finished=float(samples.finished.mean()), canonical=canonical, horizon=max_new_tokens,
    )
