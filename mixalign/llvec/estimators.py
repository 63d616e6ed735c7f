"""KL between language models from their log-likelihood vectors (docs/method.md, section 2).

A log-likelihood vector l holds log p(x_i) in nats for N fixed texts. For two models with
d = l_a - l_b, the second-order estimate is KL ~= mean(c(d)^2) / 2 nats per text, with
c(v) = v - mean(v): the mean of d is a plain cross-entropy gap and is reported separately.
Dividing by B ln 2 (B = mean UTF-8 bytes per text) gives bits per byte, comparable across
tokenizers. The estimate is symmetric in a and b (half the Jeffreys divergence).
"""

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

from mixalign.units import LN2


def _as_vector(name: str, v) -> torch.Tensor:
    """A finite 1-D float64 tensor of at least 2 texts (one text has no spread to measure)."""
    v = torch.as_tensor(v, dtype=torch.float64)
    if v.dim() != 1:
        raise ValueError(f"{name} must be 1-D (one value per text), got shape {tuple(v.shape)}")
    if v.numel() < 2:
        raise ValueError(f"{name} needs at least 2 texts (N >= 2), got N = {v.numel()}")
    if not torch.isfinite(v).all():
        raise ValueError(f"{name} has non-finite entries (NaN or inf log-likelihoods)")
    return v


def _as_matrix(name: str, L) -> torch.Tensor:
    """A finite K x N float64 tensor: K models (rows) scored on the same N >= 2 texts."""
    L = torch.as_tensor(L, dtype=torch.float64)
    if L.dim() != 2:
        raise ValueError(f"{name} must be 2-D (models x texts), got shape {tuple(L.shape)}")
    if L.shape[1] < 2:
        raise ValueError(f"{name} needs at least 2 texts (N >= 2), got N = {L.shape[1]}")
    if not torch.isfinite(L).all():
        raise ValueError(f"{name} has non-finite entries (NaN or inf log-likelihoods)")
    return L


def _check_mean_bytes(mean_bytes: float) -> float:
    mean_bytes = float(mean_bytes)
    if not (math.isfinite(mean_bytes) and mean_bytes > 0):
        raise ValueError(f"mean_bytes must be a positive finite number, got {mean_bytes}")
    return mean_bytes


def to_bits_per_byte(nats_per_text: float | torch.Tensor, mean_bytes: float):
    """Nats per text -> bits per byte, the unit that is comparable across tokenizers."""
    return nats_per_text / (_check_mean_bytes(mean_bytes) * LN2)


def centre(v: torch.Tensor) -> torch.Tensor:
    """Remove the mean over texts (last dim): only differences between texts carry KL."""
    return v - v.mean(dim=-1, keepdim=True)


def clip_low(l: torch.Tensor, quantile: float) -> torch.Tensor:
    """Clip from below at the given low quantile (per row), so a few garbled texts don't dominate."""
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"clip quantile must be in [0, 1), got {quantile}")
    l = torch.as_tensor(l, dtype=torch.float64)
    floor = torch.quantile(l, quantile, dim=-1, keepdim=True)  # linear interpolation
    return torch.maximum(l, floor)


@dataclass(frozen=True)
class KLEstimate:
    """KL(a, b) estimated from log-likelihood vectors, in both units, with its standard error.

    ce_gap_nats = mean(l_a - l_b): positive means model a assigns the texts higher likelihood
    (lower cross-entropy) than b, by that many nats per text on average.
    """

    kl_nats: float
    kl_bits_per_byte: float
    se_bits_per_byte: float
    ce_gap_nats: float
    n_texts: int
    mean_bytes: float
    clipped_quantile: float | None


def _estimate_from_difference(d: torch.Tensor, mean_bytes: float, clipped_quantile) -> KLEstimate:
    squared = centre(d) ** 2
    kl_nats = squared.mean().item()  # population variance of d, halved below
    # SE of a mean: *sample* sd (Bessel, N - 1) of the per-text terms over sqrt(N).
    se_nats = squared.std(correction=1).item() / math.sqrt(d.numel()) / 2
    return KLEstimate(
        kl_nats=kl_nats / 2,
        kl_bits_per_byte=to_bits_per_byte(kl_nats / 2, mean_bytes),
        se_bits_per_byte=to_bits_per_byte(se_nats, mean_bytes),
        ce_gap_nats=d.mean().item(),
        n_texts=d.numel(),
        mean_bytes=mean_bytes,
        clipped_quantile=clipped_quantile,
    )


def _difference(l_a, l_b, clip_quantile: float | None) -> torch.Tensor:
    l_a, l_b = _as_vector("l_a", l_a), _as_vector("l_b", l_b)
    if l_a.shape != l_b.shape:
        raise ValueError(f"l_a and l_b must score the same texts, got {l_a.numel()} vs {l_b.numel()}")
    if clip_quantile is not None:
        l_a, l_b = clip_low(l_a, clip_quantile), clip_low(l_b, clip_quantile)
    return l_a - l_b


def estimate_kl(l_a, l_b, mean_bytes: float, clip_quantile: float | None = None) -> KLEstimate:
    """KL between models a and b scored on the same N texts; optionally clip each vector first."""
    d = _difference(l_a, l_b, clip_quantile)
    return _estimate_from_difference(d, _check_mean_bytes(mean_bytes), clip_quantile)


def per_group_kl(
    l_a,
    l_b,
    groups: Sequence[Hashable] | torch.Tensor,
    text_bytes,
    clip_quantile: float | None = None,
) -> dict[Hashable, KLEstimate]:
    """KL within each group of texts (e.g. Pile domain), centring within the group.

    Centring per group removes each group's own cross-entropy gap, so the value measures how
    differently the models rank texts *inside* the domain. text_bytes is each text's UTF-8
    length; B is averaged per group. Clipping (if asked) uses quantiles of the whole vectors.
    Groups with fewer than 2 texts are left out: a single text has no spread to measure.
    Keys keep the order in which groups first appear.
    """
    d = _difference(l_a, l_b, clip_quantile)
    text_bytes = _as_vector("text_bytes", text_bytes)
    groups = groups.tolist() if isinstance(groups, torch.Tensor) else list(groups)  # hashable labels
    if len(groups) != d.numel() or text_bytes.numel() != d.numel():
        raise ValueError(
            f"need one group and one byte length per text: N = {d.numel()}, "
            f"got {len(groups)} groups and {text_bytes.numel()} byte lengths"
        )
    members: dict[Hashable, list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    estimates = {}
    for group, rows in members.items():
        if len(rows) < 2:
            continue
        index = torch.tensor(rows)
        estimates[group] = _estimate_from_difference(
            d[index], _check_mean_bytes(text_bytes[index].mean().item()), clip_quantile
        )
    return estimates


def double_centre(L: torch.Tensor) -> torch.Tensor:
    """Remove row means (each model's CE level) and column means (each text's difficulty)."""
    L = _as_matrix("L", L)
    return L - L.mean(dim=1, keepdim=True) - L.mean(dim=0, keepdim=True) + L.mean()


def model_map(L: torch.Tensor, mean_bytes: float) -> torch.Tensor:
    """Coordinates Q (K x N) whose squared row distances are pairwise KL in bits per byte.

    Row i minus row j of the double-centred L is c(l_i - l_j), so scaling by
    1 / sqrt(2 N B ln 2) turns ||q_i - q_j||^2 into mean(c(d)^2) / (2 B ln 2).
    """
    Q = double_centre(L)
    return Q / math.sqrt(2 * Q.shape[1] * _check_mean_bytes(mean_bytes) * LN2)


def pca_2d(Q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First two principal coordinates (K x 2) of the model map and their explained variance ratios.

    Signs are fixed (largest |coordinate| of each component positive) so maps don't flip
    between calls.
    """
    Q = _as_matrix("Q", Q)
    if Q.shape[0] < 2:
        raise ValueError(f"a map needs at least 2 models (rows), got {Q.shape[0]}")
    U, S, _ = torch.linalg.svd(Q - Q.mean(dim=0, keepdim=True), full_matrices=False)
    coords = U[:, :2] * S[:2]
    largest = coords.gather(0, coords.abs().argmax(dim=0, keepdim=True))
    coords = coords * torch.where(largest < 0, -1.0, 1.0)
    variance = S**2
    total = variance.sum()
    ratio = variance[:2] / total if total > 0 else torch.zeros(2, dtype=torch.float64)
    return coords, ratio
