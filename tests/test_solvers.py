"""Mixture solvers: recovery, optimality (cosine, KKT), fallback, smoothing and diagnostics."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import nnls

from mixalign.llvec.estimators import centre
from mixalign.mixture.solvers import (
    Diagnostics,
    SolverResult,
    diagnose,
    linearity_check,
    smooth,
    solve_direction,
    solve_distance,
)

LN2 = math.log(2.0)
SEEDS = st.integers(min_value=0, max_value=2**31 - 1)


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def domain_directions(n, k, seed):
    """N x K centred columns: full rank with probability 1."""
    return centre(randn(k, n, seed=seed)).T


def dirichlet(k, count, concentration, seed):
    """Random simplex points; small concentrations give nearly sparse ones."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        alpha = torch.full((count, k), concentration, dtype=torch.float64)
        return torch.distributions.Dirichlet(alpha).sample()


def sparse_simplex_point(k, seed):
    w = dirichlet(k, 1, 1.0, seed)[0]
    w[torch.randperm(k, generator=torch.Generator().manual_seed(seed))[: k // 2]] = 0.0
    return w / w.sum()


def candidate_mixtures(k, seed):
    """10,000 simplex points: dense and nearly sparse Dirichlet samples, vertices, edge midpoints."""
    vertices = torch.eye(k, dtype=torch.float64)
    midpoints = (vertices[:, None] + vertices[None, :]).reshape(-1, k) / 2
    dense = dirichlet(k, 4000, 1.0, seed)
    sparse = dirichlet(k, 6000 - vertices.shape[0] - midpoints.shape[0], 0.05, seed + 1)
    return torch.cat([vertices, midpoints, dense, sparse])[:10_000]


def cosine(x, y):
    return (x * y).sum(0) / (x.norm(dim=0) * y.norm(dim=0))


def simplex_kkt_violation(A, t, w, g):
    """Largest KKT violation of min_{w in simplex} ||t - g A w||^2 / 2, relative to the gradient scale."""
    gradient = g * g * (A.T @ (A @ w)) - g * (A.T @ t)
    support = w > 1e-12
    level = gradient[support].mean()
    scale = (g * g * (A.T @ A)).abs().max() + (g * A.T @ t).abs().max()
    on_support = (gradient[support] - level).abs().max()  # equal gradients where w > 0
    off_support = (level - gradient[~support]).clamp_min(0).max() if (~support).any() else 0.0
    return (max(on_support, off_support) / scale).item()


@settings(max_examples=15, deadline=None)
@given(seed=SEEDS, sparse=st.booleans())
def test_both_solvers_recover_a_reachable_mixture(seed, sparse):
    A = domain_directions(500, 8, seed)
    w_true = sparse_simplex_point(8, seed) if sparse else dirichlet(8, 1, 1.0, seed)[0]
    direction = solve_direction(A, A @ w_true)
    assert torch.allclose(direction.weights, w_true, atol=1e-6)
    assert torch.allclose(direction.raw, w_true, atol=1e-6)  # v* = w* since sum(w*) = 1
    assert not direction.fell_back and direction.solver == "direction"
    distance = solve_distance(A, A @ w_true, step_ratio=1.0)
    assert torch.allclose(distance.weights, w_true, atol=1e-6)
    assert distance.solver == "distance"
    # The distance solver recovers the mixture at the right step length too.
    assert torch.allclose(solve_distance(A, 3.0 * (A @ w_true), step_ratio=3.0).weights, w_true, atol=1e-6)


def test_direction_recovers_mixture_when_target_is_further_than_one_probe():
    A = domain_directions(500, 8, seed=1)
    w_true = dirichlet(8, 1, 1.0, seed=1)[0]
    result = solve_direction(A, 40.0 * (A @ w_true))
    assert torch.allclose(result.weights, w_true, atol=1e-6)
    assert torch.allclose(result.raw, 40.0 * w_true, atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(seed=SEEDS, k=st.integers(1, 12))
def test_direction_solver_matches_scipy_nnls(seed, k):
    A, t = domain_directions(200, k, seed), centre(randn(200, seed=seed + 1))
    A[:, 0] += 0.5 * t  # at least one domain helps, so there is no fallback
    reference, _ = nnls(A.numpy(), t.numpy())
    result = solve_direction(A, t)
    assert torch.allclose(result.raw, torch.from_numpy(reference), atol=1e-9)


def test_direction_solution_has_the_best_cosine_among_10000_mixtures():
    A = domain_directions(500, 8, seed=2)
    coefficients = torch.tensor([1.0, 0.8, -0.6, 0.3, -0.2, 0.5, 0.1, -0.9], dtype=torch.float64)
    t = A @ coefficients + 2.0 * centre(randn(500, seed=3))  # outside the cone and the span
    result = solve_direction(A, t)
    assert (result.weights == 0).sum() >= 3  # the constraint binds: not a trivial projection
    best = cosine(A @ result.weights, t).item()
    others = cosine(A @ candidate_mixtures(8, seed=4).T, t[:, None])
    assert others.max().item() <= best + 1e-12


def test_all_negative_alignment_falls_back_to_uniform_with_a_warning():
    common = randn(300, seed=5)
    A = centre((common[:, None] + 0.3 * randn(300, 6, seed=6)).T).T  # positively correlated domains
    t = -(A @ dirichlet(6, 1, 1.0, seed=7)[0])
    with pytest.warns(UserWarning, match="uniform"):
        result = solve_direction(A, t)
    assert result.fell_back
    assert torch.equal(result.raw, torch.zeros(6, dtype=torch.float64))
    assert torch.allclose(result.weights, torch.full((6,), 1 / 6, dtype=torch.float64), atol=1e-15)


@settings(max_examples=20, deadline=None)
@given(seed=SEEDS, k=st.integers(1, 12), g=st.sampled_from([0.25, 1.0, 3.0, 20.0]))
def test_distance_solver_satisfies_kkt(seed, k, g):
    A, t = domain_directions(200, k, seed), centre(randn(200, seed=seed + 1))
    t = t + A @ randn(k, seed=seed + 2)
    w = solve_distance(A, t, g).weights
    assert w.min() >= 0 and w.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert simplex_kkt_violation(A, t, w, g) < 1e-9


def test_distance_solution_beats_10000_random_mixtures():
    A = domain_directions(500, 8, seed=8)
    t = A @ torch.tensor([2.0, -1.0, 0.5, 0.0, 1.5, -0.5, 0.2, 0.3], dtype=torch.float64)
    t = t + centre(randn(500, seed=9))
    g = 2.0
    w = solve_distance(A, t, g).weights
    objective = ((t - g * (A @ w)) ** 2).sum().item()
    others = ((t[:, None] - g * (A @ candidate_mixtures(8, seed=10).T)) ** 2).sum(0)
    assert objective <= others.min().item() + 1e-9


def test_duplicate_and_zero_domains_do_not_break_the_solvers():
    A = domain_directions(300, 5, seed=11)
    A[:, 1] = A[:, 0]  # two domains that move the model identically
    A[:, 2] = 0.0  # a probe that did not move
    t = A @ torch.tensor([0.5, 0.0, 0.0, 0.3, 0.2], dtype=torch.float64) + 0.1 * centre(randn(300, seed=12))
    reference, residual = nnls(A.numpy(), t.numpy())
    result = solve_direction(A, t)
    assert (t - A @ result.raw).norm().item() == pytest.approx(residual, rel=1e-9)
    assert simplex_kkt_violation(A, t, solve_distance(A, t, 1.0).weights, 1.0) < 1e-9


def test_solvers_centre_their_inputs():
    A, w_true = domain_directions(200, 4, seed=13), torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    shifted = solve_direction(A + torch.arange(4.0, dtype=torch.float64), A @ w_true + 7.0)
    assert torch.allclose(shifted.weights, w_true, atol=1e-9)


def test_full_size_problem_solves_to_kkt():
    A = domain_directions(10_000, 22, seed=14)
    t = A @ randn(22, seed=15) + centre(randn(10_000, seed=16))
    direction = solve_direction(A, t)
    assert direction.weights.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert simplex_kkt_violation(A, t, solve_distance(A, t, 5.0).weights, 5.0) < 1e-9


def test_smoothing_mixes_toward_the_prior():
    w = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    natural_percent = torch.tensor([50.0, 30.0, 20.0], dtype=torch.float64)
    smoothed = smooth(w, natural_percent, 0.2)
    assert torch.allclose(smoothed, torch.tensor([0.9, 0.06, 0.04], dtype=torch.float64), atol=1e-15)
    assert torch.equal(smooth(w, natural_percent, 0.0), w)
    assert torch.allclose(smooth(w, natural_percent, 1.0), natural_percent / 100, atol=1e-15)
    uniform = torch.ones(3, dtype=torch.float64)
    assert torch.allclose(smooth(w, uniform, 0.3), torch.tensor([0.8, 0.1, 0.1], dtype=torch.float64))


@pytest.mark.parametrize(
    "w, prior, strength, message",
    [
        ([1.0, 0.0], [0.5, 0.5], 1.5, "strength"),
        ([1.0, 0.0], [0.5, 0.5], -0.1, "strength"),
        ([1.0, 0.0], [0.5, -0.5], 0.5, "non-negative"),
        ([1.0, 0.0], [0.0, 0.0], 0.5, "all zero"),
        ([1.0, 0.0], [0.2, 0.3, 0.5], 0.5, "vector of 2"),
    ],
)
def test_smoothing_rejects_bad_inputs(w, prior, strength, message):
    with pytest.raises(ValueError, match=message):
        smooth(torch.tensor(w), torch.tensor(prior), strength)


def test_diagnostics_on_a_hand_computed_two_domain_example():
    # Orthogonal centred directions e1, e2 and a part e3 that no domain can reach.
    e1 = torch.tensor([1.0, -1.0, 0.0, 0.0], dtype=torch.float64)
    e2 = torch.tensor([0.0, 0.0, 1.0, -1.0], dtype=torch.float64)
    e3 = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64)
    A, t = torch.stack([e1, e2], dim=1), 2 * e1 + e2 + e3  # ||t||^2 = 8 + 2 + 4 = 14
    result = solve_direction(A, t)
    assert torch.allclose(result.raw, torch.tensor([2.0, 1.0], dtype=torch.float64), atol=1e-12)
    mean_bytes = 2.0
    report = diagnose(A, t, result.weights, step_ratio=3.0, mean_bytes=mean_bytes)
    assert isinstance(report, Diagnostics)
    expected_cosines = torch.tensor([2 / math.sqrt(7), 1 / math.sqrt(7)], dtype=torch.float64)
    assert torch.allclose(report.domain_cosines, expected_cosines, atol=1e-12)
    assert report.mixture_cosine == pytest.approx(math.sqrt(5 / 7), abs=1e-12)
    assert report.relative_residual == pytest.approx(2 / math.sqrt(14), abs=1e-12)
    # g A w = 3 (2 e1 + e2) / 3 leaves exactly e3: mean(e3^2) / 2 = 0.5 nats.
    assert report.predicted_kl_bits_per_byte == pytest.approx(0.5 / (mean_bytes * LN2), abs=1e-12)
    assert report.current_kl_bits_per_byte == pytest.approx(14 / 4 / 2 / (mean_bytes * LN2), abs=1e-12)


def test_diagnostics_give_zero_cosine_for_a_probe_that_did_not_move():
    A = torch.stack([torch.tensor([1.0, -1.0, 0.0]), torch.zeros(3)], dim=1).double()
    report = diagnose(A, torch.tensor([2.0, -2.0, 0.0]).double(), torch.tensor([1.0, 0.0]), 1.0, 1.0)
    assert report.domain_cosines.tolist() == pytest.approx([1.0, 0.0])
    assert report.relative_residual == pytest.approx(0.0, abs=1e-12)
    assert report.predicted_kl_bits_per_byte == pytest.approx(1 / 3 / LN2, abs=1e-12)


def test_linearity_check_compares_measured_and_predicted_movement():
    A = domain_directions(100, 3, seed=17)
    w = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    cos, ratio = linearity_check(2.0 * (A @ w) + 5.0, A, w)  # a constant shift carries no KL
    assert cos == pytest.approx(1.0, abs=1e-12) and ratio == pytest.approx(2.0, abs=1e-12)
    predicted = A @ w
    orthogonal = centre(randn(100, seed=18))
    orthogonal = orthogonal - (orthogonal @ predicted) / (predicted @ predicted) * predicted
    cos, ratio = linearity_check(orthogonal, A, w)
    assert cos == pytest.approx(0.0, abs=1e-12)
    assert ratio == pytest.approx((orthogonal.norm() / predicted.norm()).item(), rel=1e-12)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: solve_direction(torch.zeros(5, 2), torch.zeros(4)), "N = 5"),
        (lambda: solve_direction(torch.zeros(5), torch.zeros(5)), "N x K"),
        (lambda: solve_direction(torch.zeros(1, 2), torch.zeros(1)), "N >= 2"),
        (lambda: solve_distance(torch.eye(3), torch.ones(3), 0.0), "step_ratio"),
        (lambda: solve_distance(torch.eye(3) * math.nan, torch.ones(3), 1.0), "finite"),
        (lambda: diagnose(torch.eye(3), torch.ones(3), torch.ones(3), 1.0, 1.0), "t is zero"),
        (lambda: diagnose(torch.eye(3), torch.arange(3.0), torch.ones(2), 1.0, 1.0), "vector of 3"),
        (lambda: diagnose(torch.eye(3), torch.arange(3.0), torch.ones(3), 1.0, -1.0), "mean_bytes"),
        (lambda: linearity_check(torch.arange(3.0), torch.zeros(3, 2), torch.ones(2)), "A w is zero"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_solver_result_is_a_plain_record():
    result = solve_direction(domain_directions(50, 3, seed=19), centre(randn(50, seed=20)))
    assert isinstance(result, SolverResult) and result.weights.dtype == torch.float64


def test_the_prediction_note_says_why_a_forecast_is_withheld():
    from mixalign.mixture.method import _prediction_note

    assert "extrapolates the probes' moves past the target" in _prediction_note(0.5, 0.6, None)
    assert "does not hold here" in _prediction_note(0.5, 0.3, (0.85, 1.0))  # the solution's probe moved elsewhere
    assert "norm ratio 1.40" in _prediction_note(0.5, 0.3, (0.95, 1.4))  # or by another length
    assert _prediction_note(0.5, 0.3, (0.95, 1.1)) == "" and _prediction_note(0.5, 0.3, None) == ""
