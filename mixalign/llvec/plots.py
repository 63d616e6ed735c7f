"""Pictures of log-likelihood space: the model map (2-D PCA of the double-centred vectors)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from mixalign.io import atomic_path  # noqa: E402
from mixalign.llvec.estimators import model_map, pca_2d  # noqa: E402
from mixalign.llvec.vectors import LogLikelihoodVector, check_same_textset  # noqa: E402


def save_figure(figure, path: str | Path) -> None:
    """Write a PNG atomically, so a reader never sees half an image."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, bbox_inches="tight", format="png")


def save_model_map(vectors: Sequence[LogLikelihoodVector], labels: Sequence[str], path: str | Path, title: str = "",
                   star: str | None = None, trajectory: bool = False):
    """PCA map of models in which squared distances approximate the log-likelihood-vector distance
    (bits/byte); returns the figure. The model labelled `star` is drawn as a star; with
    `trajectory`, the other models are joined in order (checkpoints of one run)."""
    check_same_textset(*vectors)
    L = torch.from_numpy(np.stack([v.values for v in vectors]))
    coords, ratios = pca_2d(model_map(L, vectors[0].mean_bytes))
    figure, ax = plt.subplots(figsize=(6, 5))
    xy = coords.numpy()
    starred = [label == star for label in labels]
    path_points = xy[[not s for s in starred]]
    if trajectory and len(path_points) > 1:
        ax.plot(path_points[:, 0], path_points[:, 1], "-", color="0.7", zorder=1)
    for (x, y), label, is_star in zip(xy, labels, starred):
        ax.scatter(x, y, marker="*" if is_star else "o", s=160 if is_star else 30, color="C3" if is_star else "C0", zorder=2)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(f"PC1 ({100 * float(ratios[0]):.0f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * float(ratios[1]):.0f}% of variance)")
    ax.set_title(title or "model map (squared distance ~ log-likelihood-vector distance, bits/byte)")
    ax.set_aspect("equal", adjustable="datalim")
    save_figure(figure, path)
    return figure
