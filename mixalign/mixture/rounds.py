"""When each mixture applies: the weight schedule of a run and the steps where rounds begin.

A run trains on one mixture per round. Round 0 starts at step 0, or after `warmup_steps` of uniform
training when the base is a fresh initialisation (the from-scratch setting: probes of a random
model say little); the remaining steps are split into `rounds` equal rounds, and each round's
mixture is computed from the model as it is when the round begins.
"""

from __future__ import annotations

from typing import Sequence

from mixalign.errors import MixalignError


def round_starts(max_steps: int, rounds: int, warmup_steps: int = 0) -> list[int]:
    """First step of each round: `rounds` equal parts of the steps after the warm-up."""
    if max_steps <= 0:
        raise MixalignError("trainer.max_steps must be set when the mixture is computed (data.weights: aligned)")
    if not 0 <= warmup_steps < max_steps:
        raise MixalignError(f"mixture.warmup_steps ({warmup_steps}) must be below trainer.max_steps ({max_steps})")
    span = max_steps - warmup_steps
    if rounds > span:
        raise MixalignError(f"mixture.rounds ({rounds}) is more than the {span} steps to split")
    return [warmup_steps + round(span * r / rounds) for r in range(rounds)]


def round_end(starts: Sequence[int], start: int, max_steps: int) -> int:
    """The step where the round that begins at `start` ends (the next round's start, or the end)."""
    later = [s for s in starts if s > start]
    return later[0] if later else max_steps
