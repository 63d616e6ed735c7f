"""Training batches drawn from a domain mixture, and fixed validation windows.

Batch `i` on rank `r` is a pure function of (seed, r, i): its domains are drawn from the weights,
then a random window of block_size + 1 tokens from each drawn domain. So data order is fixed by
the seed, ranks see different data, dataloader workers split the batch indices between them, and
resuming at batch `i` reproduces exactly the stream an uninterrupted run would have seen.
"""

from __future__ import annotations

from itertools import count
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

TokenSource = Callable[[], Sequence[np.ndarray]]  # opens the per-domain token arrays (lazily, per worker)


class MixtureBatches(IterableDataset):
    """Endless stream of batches `{"input", "target", "domain"}` from weighted domains."""

    def __init__(
        self,
        open_tokens: TokenSource,
        lengths: Sequence[int],
        weights: np.ndarray,
        block_size: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        start: int = 0,
    ):
        self.open_tokens = open_tokens
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.start = start
        self._tokens: Sequence[np.ndarray] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tokens": None}  # workers map the files themselves, never copy them

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

    def __iter__(self):
        worker = get_worker_info()
        worker_id, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        for index in count(self.start + worker_id, workers):
            yield self.batch(index)


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
