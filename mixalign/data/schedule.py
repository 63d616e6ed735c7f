"""The weight schedule of a run: which domain weights apply at each step (one entry per mixture round),
saved in and restored from checkpoints with the data module's state."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from mixalign.errors import MixalignError


class WeightSchedule:
    """Domain weights by step: each entry applies from its first step until the next entry."""

    def __init__(self, domains: Sequence[str], entries: Mapping[int, np.ndarray] | None = None):
        self.domains = list(domains)
        self.entries: dict[int, np.ndarray] = {}
        for step, weights in (entries or {}).items():
            self.set(step, weights)

    def set(self, step: int, weights) -> None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (len(self.domains),):
            raise ValueError(f"{len(weights)} weights for {len(self.domains)} domains")
        self.entries[int(step)] = weights

    def has(self, step: int) -> bool:
        return int(step) in self.entries

    def at(self, step: int) -> np.ndarray:
        starts = [s for s in self.entries if s <= step]
        if not starts:
            raise MixalignError(f"no domain weights for step {step}: data.weights is 'aligned' and no mixture "
                                "has been computed for it (is mixture.target set?)")
        return self.entries[max(starts)]

    def state_dict(self) -> dict:
        return {"schedule": {step: dict(zip(self.domains, map(float, w))) for step, w in sorted(self.entries.items())}}

    def load_state_dict(self, state: dict, check) -> None:
        """Entries from a checkpoint; `check` turns each stored {domain: weight} into validated weights."""
        self.entries = {}
        for step, weights in state.get("schedule", {}).items():
            self.set(int(step), check(weights))
