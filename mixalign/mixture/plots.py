"""The weights' bar chart: what was chosen, why (alignment per domain), and every candidate's measurement."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mixalign.llvec.plots import plt, save_figure


def bar_chart(result, png: Path) -> None:
    """Panels: weights (chosen and solved), cos(Delta_k, t), each domain probe's change of exact KL to
    the target (when measured), and the candidates' measured distances (when measured)."""
    exact = result.domain_exact_change is not None
    panels = 2 + exact + bool(result.candidates)
    figure, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 0.4 * len(result.domains) + 2.0))
    y = np.arange(len(result.domains))
    axes[0].barh(y - 0.2, result.weights, height=0.4, color="C0", label=f"chosen ({result.chosen})")
    axes[0].barh(y + 0.2, result.solved, height=0.4, color="0.7", label="solved")
    axes[0].set_yticks(y, result.domains)
    axes[0].set_xlabel("weight")
    axes[0].legend(fontsize=7)
    axes[0].invert_yaxis()
    _signed(axes[1], y, result.domain_cosines, "cos(Delta_k, t)",
            f"alignment (mixture: {result.mixture_cosine:.3f})", result.domains)
    if exact:  # negative: training on the domain alone brings the model closer to the target
        _signed(axes[2], y, -result.domain_exact_change, "- change of exact KL (bits/byte)",
                "closer to the target in exact KL", result.domains)
    if result.candidates:
        ax = axes[-1]
        names = [c.name for c in result.candidates]
        values = [c.exact_to_target if c.exact_to_target is not None else c.llvec for c in result.candidates]
        colours = ["C2" if n == result.chosen else "C0" for n in names]
        ax.barh(np.arange(len(names)), values, color=colours)
        ax.set_yticks(np.arange(len(names)), names)
        ax.invert_yaxis()
        measure = "exact KL to target" if result.candidates[0].exact_to_target is not None else "vector distance"
        ax.set_xlabel(f"{measure} after the probe (bits/byte)")
        ax.set_title("candidates (chosen in green)")
    save_figure(figure, png)
    plt.close(figure)


def _signed(ax, y, values, xlabel: str, title: str, labels) -> None:
    ax.barh(y, values, color=["C2" if v > 0 else "C3" for v in values])
    ax.axvline(0, color="0.5", lw=0.8)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
