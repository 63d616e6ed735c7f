"""A round's result: the mixture, its diagnostics and candidates, as a table, a dict, and the YAML file
(with a bar chart beside it) that `data.weights:` reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from mixalign.io import atomic_path
from mixalign.llvec.textset import FEW_TEXTS
from mixalign.mixture.cost import CostAccount
from mixalign.mixture.measure import Candidate
from mixalign.mixture.selection import Selection


@dataclass
class MixtureResult:
    domains: list[str]
    weights: np.ndarray  # the mixture to train on (the chosen candidate)
    solved: np.ndarray  # the solver's mixture (after smoothing)
    solver: str
    fell_back: bool
    domain_cosines: np.ndarray
    domain_exact_change: np.ndarray | None  # each domain probe's change of exact KL to the target
    mixture_cosine: float
    relative_residual: float
    step_ratio: float
    current_llvec: float
    predicted_llvec: float
    prediction_note: str  # empty when the prediction is worth showing
    current_exact: float | None
    linearity: tuple[float, float] | None
    candidates: list[Candidate]
    selection: Selection | None
    trained_by: dict[str, int]  # the probes trained this time, and the rank that trained each
    scarce: dict = field(default_factory=dict)  # data domains with fewer than FEW_TEXTS texts in the text set
    provenance: dict = field(default_factory=dict)
    cost: CostAccount | None = None

    @property
    def probes_trained(self) -> int:
        return len(self.trained_by)

    def probes_by_rank(self) -> dict[int, list[str]]:
        ranks = {}
        for name, rank in self.trained_by.items():
            ranks.setdefault(rank, []).append(name)
        return dict(sorted(ranks.items()))

    @property
    def chosen(self) -> str:
        return self.selection.chosen if self.selection else "solution"

    def table(self) -> str:
        """The diagnostics as plain text (printed, and logged to TensorBoard)."""
        return "\n".join(_table_lines(self))

    def to_dict(self) -> dict:
        as_floats = lambda v: None if v is None else {d: float(x) for d, x in zip(self.domains, v)}  # noqa: E731
        return {
            "weights": as_floats(self.weights),
            "chosen": self.chosen,
            "diagnostics": {
                "solver": self.solver,
                "solved_weights": as_floats(self.solved),
                "fell_back_to_uniform": self.fell_back,
                "domain_cosines": as_floats(self.domain_cosines),
                "domain_exact_kl_change": as_floats(self.domain_exact_change),
                "mixture_cosine": self.mixture_cosine,
                "relative_residual": self.relative_residual,
                "step_ratio": self.step_ratio,
                "llvec_distance_now": self.current_llvec,
                "llvec_distance_predicted": None if self.prediction_note else self.predicted_llvec,
                "prediction_note": self.prediction_note or None,
                "exact_kl_now": self.current_exact,
                "linearity_cosine": None if self.linearity is None else self.linearity[0],
                "linearity_norm_ratio": None if self.linearity is None else self.linearity[1],
                "selection": None if self.selection is None else asdict(self.selection),
                "candidates": [{**asdict(c), "weights": as_floats(c.weights)} for c in self.candidates],
                "scarce_in_textset": self.scarce or None,
                "probes_trained_by_rank": self.probes_by_rank(),
            },
            "provenance": self.provenance,
            "cost": None if self.cost is None else self.cost.to_dict(),
        }


def _table_lines(r: MixtureResult) -> list[str]:
    exact = r.domain_exact_change is not None
    lines = [f"{'domain':<24} {'weight':>8} {'solved':>8} {'cos(Delta_k, t)':>16}"
             + (f" {'exact KL change':>16}" if exact else "")]
    for k, domain in enumerate(r.domains):
        lines.append(f"{domain:<24} {r.weights[k]:>8.4f} {r.solved[k]:>8.4f} {r.domain_cosines[k]:>16.4f}"
                     + (f" {r.domain_exact_change[k]:>+16.4f}" if exact else ""))
    fallback = " (fell back to uniform: no mixture moves toward the target)" if r.fell_back else ""
    lines += [f"solver: {r.solver}{fallback}",
              f"cos(A w, t) = {r.mixture_cosine:.4f}; relative residual ||t - A v*|| / ||t|| = {r.relative_residual:.4f}",
              f"log-likelihood-vector distance (Kishino et al. scale) to the target now: {r.current_llvec:.4f} bits/byte"
              + (f"; exact KL on the text set, mean of its two directions: {r.current_exact:.4f}"
                 if r.current_exact is not None else "")]
    if r.prediction_note:
        lines.append(f"predicted after training: not shown: {r.prediction_note}")
    else:
        lines.append(f"predicted after training (linear model, {r.step_ratio:.1f} probe-lengths of the main run's "
                     f"schedule): log-likelihood-vector distance {r.predicted_llvec:.4f}")
    if r.linearity:
        lines.append(f"linearity (the solution's probe vs A w): cosine {r.linearity[0]:.4f}, norm ratio {r.linearity[1]:.4f}")
    if r.candidates:
        lines.append(f"{'candidate':<14} {'llvec':>8} {'(linear)':>9} {'exact KL ->target':>18} {'exact KL <-target':>18}")
        for c in r.candidates:
            ex = ("" if c.exact_to_target is None else f" {c.exact_to_target:>18.4f} {c.exact_from_target:>18.4f}")
            lines.append(f"{c.name:<14} {c.llvec:>8.4f} {c.predicted_llvec:>9.4f}{ex}")
        lines.append(f"chosen: {r.chosen} ({r.selection.reason})")
    if r.scarce:
        seen = ", ".join(f"{d} {n}" for d, n in r.scarce.items())
        lines.append(f"warning: the text set has fewer than {FEW_TEXTS} texts of {seen}: every distance here barely "
                     "sees these domains, so their weights rest on how training on them moves the other texts")
    by_rank = r.probes_by_rank()
    shares = f"; by rank: {', '.join(f'{k}: {len(v)}' for k, v in by_rank.items())}" if len(by_rank) > 1 else ""
    lines.append(f"probes trained this time: {r.probes_trained} (the rest came from the cache{shares})")
    if r.cost is not None:
        lines.append(r.cost.line())
    return lines



def write_weights(result: MixtureResult, path: str | Path) -> Path:
    """Weights + diagnostics + candidates + provenance as YAML, and a bar chart PNG beside it; both atomic."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(result.to_dict(), sort_keys=False), encoding="utf-8")
    png = path.with_suffix(".png")
    from mixalign.mixture.plots import bar_chart

    bar_chart(result, png)
    return png
