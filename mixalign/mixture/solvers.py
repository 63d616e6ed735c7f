"""Domain weights from log-likelihood differences (docs/method.md, section 3, our reconstruction).

Models are points in (centred) log-likelihood space. A short probe run on domain k moves the
base along Delta_k (column k of A, N x K); to first order a mixture w moves it along A w.
t is the centred direction from the base to the target. Two ways to aim:

- direction solver: v* = argmin_{v >= 0} ||t - A v||^2, w = v* / sum(v*); this maximises
  cos(A w, t) over the simplex, ignoring how far the main run will travel;
- distance solver: min over the simplex of ||t - g A w||^2, g = main-run steps / probe steps,
  trusting the linear model for the step length too.

Both are small convex quadratic programs in K variables, solved exactly in Gram form
(G = A^T A, A^T t) by one primal active-set method.
"""

import math
import warnings
from dataclasses import dataclass

import torch

from mixalign.errors import MixalignError
from mixalign.llvec.estimators import centre, to_bits_per_byte


@dataclass(frozen=True)
class SolverResult:
    """weights: K domain weights summing to 1. raw: v* (direction) or the simplex optimum
    (distance). fell_back: no mixture moved toward the target, so the weights are uniform."""

    weights: torch.Tensor
    raw: torch.Tensor
    fell_back: bool
    solver: str


@dataclass(frozen=True)
class Diagnostics:
    """How well the chosen mixture can be expected to work, under the linear model.

    relative_residual = ||t - A v*|| / ||t||: 0 means the target is reachable by some
    non-negative combination of domains, 1 means no domain helps at all.
    """

    domain_cosines: torch.Tensor
    mixture_cosine: float
    relative_residual: float
    predicted_kl_bits_per_byte: float
    current_kl_bits_per_byte: float


def _directions(A, t) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and centre A (N x K) and t (N). Centring again is a no-op for centred inputs
    and protects callers who forgot: constant shifts of l carry no KL."""
    A = torch.as_tensor(A, dtype=torch.float64)
    t = torch.as_tensor(t, dtype=torch.float64)
    if A.dim() != 2 or A.shape[1] < 1:
        raise ValueError(f"A must be N x K with K >= 1 domain columns, got shape {tuple(A.shape)}")
    if t.dim() != 1 or t.numel() != A.shape[0]:
        raise ValueError(f"t must be a vector of N = {A.shape[0]} texts, got shape {tuple(t.shape)}")
    if A.shape[0] < 2:
        raise ValueError(f"need at least 2 texts (N >= 2), got N = {A.shape[0]}")
    if not (torch.isfinite(A).all() and torch.isfinite(t).all()):
        raise ValueError("A and t must be finite (NaN or inf found)")
    return centre(A.T).T, centre(t)


def _as_weights(name: str, w, size: int | None = None) -> torch.Tensor:
    """Non-negative, not all zero, normalised to sum 1."""
    w = torch.as_tensor(w, dtype=torch.float64)
    if w.dim() != 1 or (size is not None and w.numel() != size):
        raise ValueError(f"{name} must be a vector of {size or 'K'} weights, got shape {tuple(w.shape)}")
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"{name} must be finite and non-negative, got {w.tolist()}")
    if w.sum() <= 0:
        raise ValueError(f"{name} is all zero: no domain has any weight")
    return w / w.sum()


def _check_step_ratio(step_ratio: float) -> float:
    step_ratio = float(step_ratio)
    if not (math.isfinite(step_ratio) and step_ratio > 0):
        raise ValueError(f"step_ratio (main-run steps / probe steps) must be positive, got {step_ratio}")
    return step_ratio


def _active_set(H: torch.Tensor, f: torch.Tensor, on_simplex: bool) -> torch.Tensor:
    """argmin 1/2 v^T H v - f^T v over v >= 0 (and sum(v) = 1 if on_simplex), H PSD.

    Lawson-Hanson style: keep a free set P, solve the equality-constrained problem on P, step
    back to feasibility when some free variable would go negative, and free the bound variable
    whose KKT multiplier is most negative until none is. Subproblems use least squares, so
    duplicate or zero domain columns (singular H) are handled.
    """
    K = f.numel()
    tol = 1e-12 * (H.abs().max().item() + f.abs().max().item() + 1e-300)
    v = torch.zeros(K, dtype=torch.float64)
    free = torch.zeros(K, dtype=torch.bool)
    if on_simplex:  # start at the best vertex
        start = (H.diagonal() / 2 - f).argmin()
        v[start], free[start] = 1.0, True

    def solve_on_free() -> torch.Tensor:
        index = free.nonzero().squeeze(1)
        n = index.numel()
        z = torch.zeros(K, dtype=torch.float64)
        if n == 0:
            return z
        system = torch.zeros(n + on_simplex, n + on_simplex, dtype=torch.float64)
        system[:n, :n] = H[index][:, index]
        rhs = torch.ones(n + on_simplex, dtype=torch.float64)
        rhs[:n] = f[index]
        if on_simplex:  # border with the multiplier of sum(v) = 1
            system[:n, n] = system[n, :n] = 1.0
        z[index] = torch.linalg.lstsq(system, rhs.unsqueeze(1), driver="gelsd").solution[:n, 0]
        return z

    for _ in range(10 * K + 10):
        gradient = H @ v - f
        # Multipliers of v_j >= 0: the gradient, shifted by the common free-set value on the simplex.
        level = gradient[free].mean() if on_simplex else 0.0
        multipliers = torch.where(free, torch.inf, gradient - level)
        entering = multipliers.argmin()
        if multipliers[entering] >= -tol:
            return v
        free[entering] = True
        z = solve_on_free()
        if z[entering] <= 0:  # in exact arithmetic it would be > 0: the multiplier was rounding noise
            return v
        while True:
            blocking = free & (z <= 0)
            if not blocking.any():
                v = z
                break
            step = (v[blocking] / (v[blocking] - z[blocking])).min()
            v = (v + step * (z - v)).clamp_min(0.0)
            free &= v > 0
            v[~free] = 0.0
            z = solve_on_free()
    raise RuntimeError(f"active-set solver did not converge in {10 * K + 10} iterations (K = {K})")


def solve_direction(A, t) -> SolverResult:
    """Weights whose combined direction A w points at t: NNLS, then normalise to the simplex."""
    A, t = _directions(A, t)
    v = _active_set(A.T @ A, A.T @ t, on_simplex=False)
    K = A.shape[1]
    if v.sum() <= 0:
        warnings.warn(
            "no non-negative domain mixture moves the base toward the target "
            "(every A^T t <= 0); falling back to uniform weights",
            stacklevel=2,
        )
        return SolverResult(torch.full((K,), 1.0 / K, dtype=torch.float64), v, True, "direction")
    return SolverResult(v / v.sum(), v, False, "direction")


def solve_distance(A, t, step_ratio: float) -> SolverResult:
    """Simplex weights minimising ||t - g A w||^2: aim at the target and trust the step length."""
    A, t = _directions(A, t)
    g = _check_step_ratio(step_ratio)
    # ||t - g A w||^2 / 2 = 1/2 w^T (g^2 G) w - (g A^T t)^T w + const
    w = _active_set(g * g * (A.T @ A), g * (A.T @ t), on_simplex=True)
    w = w / w.sum()  # remove rounding drift off the simplex
    return SolverResult(w, w, False, "distance")


def smooth(w, prior, strength: float) -> torch.Tensor:
    """(1 - a) w + a u: hedge against probe noise by pulling toward a prior (uniform or natural).

    Both w and prior are normalised to sum 1 first, so natural shares can be given in percent.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"smoothing strength must be in [0, 1], got {strength}")
    w = _as_weights("w", w)
    prior = _as_weights("prior", prior, size=w.numel())
    return (1 - strength) * w + strength * prior


def _cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cosine along dim 0; 0 where a vector is zero (a probe that did not move points nowhere)."""
    norms = x.norm(dim=0) * y.norm(dim=0)
    return torch.where(norms > 0, (x * y).sum(dim=0) / torch.where(norms > 0, norms, 1.0), 0.0)


def diagnose(A, t, w, step_ratio: float, mean_bytes: float) -> Diagnostics:
    """Cosines, reachability and predicted KL for weights w (docs/method.md, section 3, step 4)."""
    A, t = _directions(A, t)
    if t.norm() == 0:
        raise MixalignError("t is zero: base and target give the same centred log-likelihoods")
    w = _as_weights("w", w, size=A.shape[1])
    g = _check_step_ratio(step_ratio)
    v_star = _active_set(A.T @ A, A.T @ t, on_simplex=False)
    predicted_nats = ((t - g * (A @ w)) ** 2).mean().item() / 2
    current_nats = (t**2).mean().item() / 2
    return Diagnostics(
        domain_cosines=_cosine(A, t.unsqueeze(1)),
        mixture_cosine=_cosine(A @ w, t).item(),
        relative_residual=((t - A @ v_star).norm() / t.norm()).item(),
        predicted_kl_bits_per_byte=to_bits_per_byte(predicted_nats, mean_bytes),
        current_kl_bits_per_byte=to_bits_per_byte(current_nats, mean_bytes),
    )


def linearity_check(delta_mixture, A, w) -> tuple[float, float]:
    """Does probing the mixture itself move the base along A w? Returns (cosine, norm ratio)."""
    A, delta_mixture = _directions(A, delta_mixture)
    predicted = A @ _as_weights("w", w, size=A.shape[1])
    if predicted.norm() == 0:
        raise ValueError("A w is zero: the linear model predicts no movement to compare with")
    return _cosine(delta_mixture, predicted).item(), (delta_mixture.norm() / predicted.norm()).item()
