"""What the method costs, counted in tokens against the main run it designs.

A probe trains `steps x tokens_per_step` tokens (forward and backward) and then scores the text set
(forward only). With exact KL the target reads the same texts beside every probe: in full the first
time, and then, memoized (a fixed mixalign target), only through its output head (`repeat_cost` of a
forward pass). A forward-only token costs about a third of a training token (the backward pass is
about twice the forward), so the account adds forward passes at a third to give training-token
equivalents, and divides by the main run's training tokens. Pure arithmetic: the same account serves
a finished computation and a config not yet run.
"""

from __future__ import annotations

from dataclasses import dataclass

from mixalign.mixture.candidates import (
    CLOSING_TEMPERATURES,
    LAG_TEMPERATURES,
    SHRINKAGES,
    SOFTMIN_SCALES,
    needs_domain_probes,
)
from mixalign.mixture.response import SHARPNESS

FORWARD_SHARE = 1 / 3  # a forward-only token in training-token equivalents (backward ~ 2x forward)


@dataclass(frozen=True)
class CostAccount:
    probe_train_tokens: int  # tokens every probe trained on
    probe_score_tokens: int  # forward-pass token equivalents of the scoring (base, probes, and the target's reads)
    main_train_tokens: int  # the main run's training tokens
    probes: int  # probe runs counted (domain probes, tilts, candidates)
    seconds: float | None = None  # wall time of the computation, where it ran

    @property
    def share(self) -> float:
        """The method's compute over the main run's, in training-token equivalents."""
        return (self.probe_train_tokens + FORWARD_SHARE * self.probe_score_tokens) / self.main_train_tokens

    def line(self) -> str:
        took = f"; {self.seconds / 60:.1f} min here" if self.seconds is not None else ""
        return (f"cost: {self.probes} probe runs, {self.probe_train_tokens:,} training tokens + "
                f"{self.probe_score_tokens:,} forward-pass tokens = {self.share:.1%} of the main run's "
                f"{self.main_train_tokens:,} training tokens{took}")

    def to_dict(self) -> dict:
        return {"probes": self.probes, "probe_train_tokens": self.probe_train_tokens,
                "probe_score_tokens": self.probe_score_tokens, "main_train_tokens": self.main_train_tokens,
                "share_of_main_run": self.share, "seconds": self.seconds}


def method_cost(domains: int, probe_steps: int, candidates: int, candidate_steps: int, tilts: int,
                tokens_per_step: int, textset_tokens: int, target_repeat_cost: float | None, main_train_tokens: int,
                seconds: float | None = None) -> CostAccount:
    """The account of one round: `domains` domain probes, `tilts` tilt and `candidates` candidate probes
    (uniform's included), each scored once on a text set of `textset_tokens` tokens, as is the base; with
    exact KL (`target_repeat_cost` not None) the target reads the text set once and then at that cost."""
    probes = domains + tilts + candidates
    trained = (domains * probe_steps + (tilts + candidates) * candidate_steps) * tokens_per_step
    target = 0.0 if target_repeat_cost is None else 1 + probes * target_repeat_cost
    scored = round((probes + 1 + target) * textset_tokens)
    return CostAccount(trained, scored, main_train_tokens, probes, seconds)


def planned_cost(candidates: list[str], selection: str, domains: int, probe_steps: int, candidate_steps: int,
                 tokens_per_step: int, textset_tokens: int, target_repeat_cost: float | None,
                 main_train_tokens: int, softmin_scales=SOFTMIN_SCALES,
                 lag_temperatures=LAG_TEMPERATURES, closing_temperatures=CLOSING_TEMPERATURES) -> CostAccount:
    """The account of a configuration before it runs (every candidate counted, none deduplicated)."""
    sizes = {"natural": 1, "solution": 1, "shrink": len(SHRINKAGES), "kl-softmin": len(softmin_scales),
             "lag": len(lag_temperatures), "closing": len(closing_temperatures), "response": len(SHARPNESS)}
    measured = selection == "measured"
    count = 1 + sum(sizes[name] for name in candidates) if measured else 0
    probing = needs_domain_probes(candidates, selection)
    return method_cost(domains if probing else 0, probe_steps, count, candidate_steps,
                       domains if measured and "response" in candidates else 0, tokens_per_step, textset_tokens,
                       target_repeat_cost, main_train_tokens)
