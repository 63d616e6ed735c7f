"""Sliding windows over token sequences, packed into padded batches: the core every scorer shares.

A text longer than the model's context is cut into strided windows of `context` input tokens
advancing by `context // 2`; the first window scores all its targets, each later one only the
targets not scored yet (the last window is shifted left to end at the text's end, so it is full
length too). Every target is scored exactly once, each with at least `context - context // 2`
tokens of left context once the first window is passed.

All windows of all texts are scored together: sorted by length and packed into right-padded
batches under a token budget (length bucketing). Right padding is invisible to causal attention,
so batched results equal one-at-a-time results up to float32 rounding. Log-likelihoods
(`scoring`) and exact token-level KL (`token_kl`) both walk these batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from mixalign.model.nanogpt import IGNORE_INDEX


@dataclass
class Window:
    text_index: int  # which text of the input this window belongs to
    offset: int  # position of inputs[0] in the text: targets[p] is the text's token offset + p + 1
    inputs: np.ndarray  # int64 (T,)
    targets: np.ndarray  # int64 (T,), IGNORE_INDEX where this window does not score


@dataclass
class WindowBatch:
    inputs: torch.Tensor  # int64 (B, T) on the device, right-padded with id 0
    targets: torch.Tensor  # int64 (B, T) on the device, IGNORE_INDEX on padding and context-only positions
    text_index: np.ndarray  # int64 (B,): the text each row belongs to
    offset: np.ndarray  # int64 (B,): each row's `Window.offset`


def sliding_windows(text_index: int, ids: Sequence[int], context: int) -> list[Window]:
    """Windows covering every next-token target of `ids` exactly once."""
    ids = np.asarray(ids, dtype=np.int64)
    n_targets = len(ids) - 1
    if n_targets <= 0:
        return []
    if n_targets <= context:
        return [Window(text_index, 0, ids[:-1], ids[1:].copy())]
    stride = max(1, context // 2)
    windows = []
    scored = 0  # targets ids[1..scored] are done
    start = 0
    while scored < n_targets:
        start = min(start, n_targets - context)  # last window: full length, ending at the text's end
        inputs = ids[start : start + context]
        targets = ids[start + 1 : start + context + 1].copy()
        # Target j (position j - start - 1 in this window) is new iff j > scored.
        first_new = scored + 1 - (start + 1)
        targets[:first_new] = IGNORE_INDEX
        windows.append(Window(text_index, start, inputs, targets))
        scored = start + context
        start += stride
    return windows


def text_windows(token_ids: Sequence[Sequence[int]], context: int, bos_id: int | None = None) -> list[Window]:
    """The windows of every text, in text order; with `bos_id`, it is prepended (and never scored)."""
    if isinstance(context, bool) or not isinstance(context, int) or context < 1:
        raise ValueError(f"context must be a positive int, got {context!r}")
    windows: list[Window] = []
    for i, ids in enumerate(token_ids):
        ids = list(ids)
        windows.extend(sliding_windows(i, [bos_id] + ids if bos_id is not None else ids, context))
    return windows


def default_batch_tokens(device: str | torch.device) -> int:
    """Scoring batch budget: big on GPUs; small on CPUs, where big batches overflow the caches and
    gain nothing, the work being compute-bound already (BENCHMARKS.md, scoring)."""
    return 16384 if torch.device(device).type == "cuda" else 1024


def pack(windows: Sequence[Window], max_batch_tokens: int) -> list[list[int]]:
    """Window indices grouped into batches of at most `max_batch_tokens` padded tokens.

    Longest first, so the biggest batch runs first and a too-large budget fails fast. A batch is
    padded to its first (longest) window; a lone window may exceed the budget.
    """
    if max_batch_tokens < 1:
        raise ValueError(f"max_batch_tokens must be positive, got {max_batch_tokens}")
    order = sorted(range(len(windows)), key=lambda k: -len(windows[k].inputs))
    batches: list[list[int]] = []
    for k in order:
        if batches and (len(batches[-1]) + 1) * len(windows[batches[-1][0]].inputs) <= max_batch_tokens:
            batches[-1].append(k)
        else:
            batches.append([k])
    return batches


def window_batches(
    windows: Sequence[Window], max_batch_tokens: int | None, device: str | torch.device
) -> Iterator[WindowBatch]:
    """The packed, right-padded batches of `windows`, as tensors on `device`."""
    for batch in pack(windows, max_batch_tokens or default_batch_tokens(device)):
        width = len(windows[batch[0]].inputs)
        inputs = np.zeros((len(batch), width), dtype=np.int64)  # pad id 0: never attended to
        targets = np.full((len(batch), width), IGNORE_INDEX, dtype=np.int64)
        for row, k in enumerate(batch):
            window = windows[k]
            inputs[row, : len(window.inputs)] = window.inputs
            targets[row, : len(window.targets)] = window.targets
        yield WindowBatch(
            inputs=torch.from_numpy(inputs).to(device),
            targets=torch.from_numpy(targets).to(device),
            text_index=np.array([windows[k].text_index for k in batch], dtype=np.int64),
            offset=np.array([windows[k].offset for k in batch], dtype=np.int64),
        )
