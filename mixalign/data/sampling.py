"""Training batches drawn from a domain mixture, and fixed validation windows.

Batch `i` on rank `r` is a pure function of (seed, r, i) and the weights: its domains are drawn
from the weights, then a random window of block_size + 1 tokens from each drawn domain. So data
order is fixed by the seed, ranks see different data, and resuming at batch `i` reproduces
exactly the stream an uninterrupted run would have seen. The training loader yields only batch
indices (`BatchIndices`); the data module makes each into a batch when its step comes, with the
weights in force then, so a mixture computed during the run applies from exactly its step.
"""

from __future__ import annotations

from itertools import count
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

TokenSource = Callable[[], Sequence[np.ndarray]]  # opens the per-domain token arrays (lazily, per process)


class MixtureBatches:
    """Batches `{"input", "target", "domain"}` from weighted domains, by index."""

    def __init__(
        self,
        open_tokens: TokenSource,
        lengths: Sequence[int],
        weights: np.ndarray,
        block_size: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
    ):
        self.open_tokens = open_tokens
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self._tokens: Sequence[np.ndarray] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tokens": None}  # probe processes map the files themselves, never copy them

    def draw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Domain ids and window starts of batch `index` (no token access: cheap to test)."""
        rng = np.random.default_rng([self.seed, self.rank, index])
        domains = rng.choice(len(self.weights), size=self.batch_size, p=self.weights)
        spans = self.lengths[domains] - self.block_size  # number of valid window starts
        starts = (rng.random(self.batch_size) * spans).astype(np.int64)
        return domains, starts

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        if self._tokens is None:
            self._tokens = self.open_tokens()
        domains, starts = self.draw(index)
        windows = np.stack(
            [self._tokens[d][s : s + self.block_size + 1] for d, s in zip(domains, starts)]
        ).astype(np.int64)
        windows = torch.from_numpy(windows)
        return {"input": windows[:, :-1], "target": windows[:, 1:], "domain": torch.from_numpy(domains)}


class BatchIndices(IterableDataset):
    """The training loader's items: batch indices start, start + 1, ... (see the module docstring)."""

    def __init__(self, start: int = 0):
        self.start = start

    def __iter__(self):
        for index in count(self.start):
            yield {"index": torch.tensor(index)}


class FixedWindows(Dataset):
    """Evenly spaced, non-overlapping windows of each domain's validation tokens: the same every run."""

    def __init__(self, tokens: Sequence[np.ndarray], block_size: int, windows_per_domain: int):
        self.block_size = block_size
        self.items: list[tuple[int, int]] = []
        self.tokens = tokens
        for domain, array in enumerate(tokens):
            available = len(array) // (block_size + 1)
            n = min(windows_per_domain, available)
            if n == 0:
                continue
            stride = available // n
            self.items.extend((domain, i * stride * (block_size + 1)) for i in range(n))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        domain, start = self.items[i]
        window = torch.from_numpy(self.tokens[domain][start : start + self.block_size + 1].astype(np.int64))
        return {"input": window[:-1], "target": window[1:], "domain": torch.tensor(domain)}
