"""Per-text log-likelihoods log p(x_i) in nats: the entries of a log-likelihood vector (docs/method.md, section 2).

log p(x) is the sum of next-token log-probabilities over the text's tokens. The first token is
context only, unless a BOS id is prepended, in which case every real token is scored (the BOS
itself never is). Log-softmax runs in float32; sums are accumulated in float64. Long texts are
scored in sliding windows, all texts together in padded batches (`windows`). For a mixalign
`GPT` (`score_gpt`), the LM head runs only on positions that are scored: a window's context-only
positions and the padding skip the head's matmul and softmax.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from mixalign.errors import MixalignError
from mixalign.llvec.windows import text_windows, window_batches
from mixalign.model.nanogpt import GPT, IGNORE_INDEX
from mixalign.progress import Progress

LogprobFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class ScoreResult:
    values: np.ndarray  # float64 (N,): log p(x_i) in nats
    n_windowed: int  # texts that needed more than one window
    tokens_per_text: np.ndarray  # int64 (N,): scored targets per text

    @property
    def n_tokens(self) -> int:
        """Scored target tokens, all texts together."""
        return int(self.tokens_per_text.sum())


def default_head_rows(device: str | torch.device) -> int:
    """Positions per LM-head chunk when scoring a mixalign `GPT` (`GPT.token_logprobs`'
    rows_per_chunk): a 256 x vocab block of logits stays in a CPU's cache; on a GPU the chunk only
    bounds the float32 logits' memory."""
    return 4096 if torch.device(device).type == "cuda" else 256


def token_logprobs(
    logprob_fn: LogprobFn,
    token_ids: Sequence[Sequence[int]],
    context: int,
    bos_id: int | None = None,
    max_batch_tokens: int | None = None,
    device: str | torch.device = "cpu",
    progress: str | None = None,
) -> list[np.ndarray]:
    """log p of every scored token of every text, in text order (float64 arrays, one per text).

    logprob_fn(input_ids LongTensor[B, T], targets LongTensor[B, T]) -> FloatTensor[B, T] gives
    log p(targets[b, t] | input_ids[b, :t+1]) and 0 where targets == -100. `progress` names a
    progress report on stderr (None: silent).
    """
    windows = text_windows(token_ids, context, bos_id)
    first = 0 if bos_id is not None else 1  # index in `ids` of the first scored token
    out = [np.full(max(0, len(ids) - first), np.nan) for ids in token_ids]
    report = Progress(progress, total=len(windows), unit="windows")
    with torch.inference_mode():
        for batch in window_batches(windows, max_batch_tokens, device):
            lp = logprob_fn(batch.inputs, batch.targets)
            if lp.shape != batch.targets.shape:
                raise ValueError(
                    f"logprob_fn returned shape {tuple(lp.shape)} for inputs of shape {tuple(batch.targets.shape)}"
                )
            scored = (batch.targets != IGNORE_INDEX).cpu().numpy()
            lp = lp.to(torch.float64).cpu().numpy()
            for row, (text, offset) in enumerate(zip(batch.text_index, batch.offset)):
                positions = np.flatnonzero(scored[row])
                out[text][offset + positions] = lp[row, positions]  # window target p: the (offset + p)-th scored token
            report.advance(len(batch.text_index))
    report.close()
    return out


def score_token_ids(
    logprob_fn: LogprobFn,
    token_ids: Sequence[Sequence[int]],
    context: int,
    bos_id: int | None = None,
    max_batch_tokens: int | None = None,
    device: str | torch.device = "cpu",
    progress: str | None = None,
) -> ScoreResult:
    """log p(x_i) in nats for every token sequence: the sums of `token_logprobs` (same arguments)."""
    per_token = token_logprobs(logprob_fn, token_ids, context, bos_id, max_batch_tokens, device, progress)
    return score_from_sums(np.array([lp.sum() for lp in per_token], dtype=np.float64),
                           np.array([len(lp) for lp in per_token], dtype=np.int64), context)


def score_from_sums(values: np.ndarray, tokens_per_text: np.ndarray, context: int) -> ScoreResult:
    """A `ScoreResult` from per-text log p sums and scored-token counts (a pass that also gave them,
    such as exact KL's, need not score again); refuses non-finite sums."""
    if not np.all(np.isfinite(values)):
        bad = np.flatnonzero(~np.isfinite(values))[:5].tolist()
        raise MixalignError(f"non-finite log-likelihoods for texts {bad} (model produced NaN/inf)")
    return ScoreResult(values, int((tokens_per_text > context).sum()), tokens_per_text)


def gpt_logprob_fn(model: GPT) -> LogprobFn:
    """`GPT.token_logprobs` on its scoring path: the LM head only on scored rows, in chunks."""
    device = next(model.parameters()).device
    return functools.partial(model.token_logprobs, rows_per_chunk=default_head_rows(device))


def score_gpt(model: GPT, token_ids: Sequence[Sequence[int]], max_batch_tokens: int | None = None,
              progress: str | None = None) -> ScoreResult:
    """`score_token_ids` for a mixalign `GPT`, on its device, with its context (`gpt_logprob_fn`)."""
    device = next(model.parameters()).device
    return score_token_ids(gpt_logprob_fn(model), token_ids, model.config.block_size,
                           max_batch_tokens=max_batch_tokens, device=device, progress=progress)
