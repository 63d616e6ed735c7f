"""KL estimates from log-likelihood vectors: values against closed forms and brute force."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mixalign.llvec.estimators import (
    KLEstimate,
    centre,
    clip_low,
    double_centre,
    estimate_kl,
    model_map,
    pca_2d,
    per_group_kl,
)

LN2 = math.log(2.0)
B = 972.3
SEEDS = st.integers(min_value=0, max_value=2**31 - 1)


def randn(*shape, seed, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, generator=generator, dtype=torch.float64)


def with_population_variance(n, variance, seed):
    """A centred vector whose mean square is exactly `variance` (to rounding)."""
    v = centre(randn(n, seed=seed))
    return v * math.sqrt(variance / (v**2).mean())


@settings(max_examples=25, deadline=None)
@given(seed=SEEDS, n=st.integers(2, 300), variance=st.floats(1e-3, 1e3), offset=st.floats(-50, 50))
def test_kl_is_half_the_population_variance_in_bits_per_byte(seed, n, variance, offset):
    l_b = randn(n, seed=seed + 1, scale=30.0) - 400.0
    l_a = l_b + with_population_variance(n, variance, seed) + offset
    estimate = estimate_kl(l_a, l_b, B)
    assert estimate.kl_nats == pytest.approx(variance / 2, rel=1e-9)
    assert estimate.kl_bits_per_byte == pytest.approx(variance / 2 / (B * LN2), rel=1e-9)
    assert estimate.ce_gap_nats == pytest.approx(offset, abs=1e-9)
    assert (estimate.n_texts, estimate.mean_bytes, estimate.clipped_quantile) == (n, B, None)


def test_kl_of_a_model_with_itself_is_zero():
    l = randn(500, seed=0, scale=50.0)
    estimate = estimate_kl(l, l, B)
    assert (estimate.kl_nats, estimate.kl_bits_per_byte, estimate.se_bits_per_byte) == (0.0, 0.0, 0.0)
    assert estimate.ce_gap_nats == 0.0


@settings(max_examples=25, deadline=None)
@given(seed=SEEDS, n=st.integers(2, 300), shift=st.floats(-1e3, 1e3))
def test_constant_shift_changes_only_the_ce_gap(seed, n, shift):
    l_a, l_b = randn(n, seed=seed, scale=20.0), randn(n, seed=seed + 1, scale=20.0)
    before, after = estimate_kl(l_a, l_b, B), estimate_kl(l_a + shift, l_b, B)
    assert after.kl_bits_per_byte == pytest.approx(before.kl_bits_per_byte, rel=1e-9, abs=1e-12)
    assert after.se_bits_per_byte == pytest.approx(before.se_bits_per_byte, rel=1e-9, abs=1e-12)
    assert after.ce_gap_nats - before.ce_gap_nats == pytest.approx(shift, abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=SEEDS, n=st.integers(2, 300))
def test_kl_is_symmetric_and_ce_gap_flips_sign(seed, n):
    l_a, l_b = randn(n, seed=seed, scale=20.0), randn(n, seed=seed + 1, scale=20.0)
    ab, ba = estimate_kl(l_a, l_b, B), estimate_kl(l_b, l_a, B)
    assert ab.kl_bits_per_byte == pytest.approx(ba.kl_bits_per_byte, rel=1e-12)
    assert ab.se_bits_per_byte == pytest.approx(ba.se_bits_per_byte, rel=1e-12)
    assert ab.ce_gap_nats == pytest.approx(-ba.ce_gap_nats, rel=1e-12, abs=1e-12)


def test_ce_gap_is_positive_when_a_is_more_likely():
    l_b = randn(100, seed=3, scale=10.0) - 300.0
    assert estimate_kl(l_b + 2.5, l_b, B).ce_gap_nats == pytest.approx(2.5, abs=1e-12)


def test_standard_error_uses_the_sample_sd_of_the_squared_centred_differences():
    l_a, l_b = randn(37, seed=4, scale=3.0).tolist(), randn(37, seed=5, scale=3.0).tolist()
    d = [a - b for a, b in zip(l_a, l_b)]
    mean_d = sum(d) / len(d)
    squares = [(x - mean_d) ** 2 for x in d]
    mean_sq = sum(squares) / len(squares)
    sample_sd = math.sqrt(sum((s - mean_sq) ** 2 for s in squares) / (len(squares) - 1))
    expected = sample_sd / math.sqrt(len(d)) / (2 * B * LN2)
    estimate = estimate_kl(torch.tensor(l_a, dtype=torch.float64), torch.tensor(l_b, dtype=torch.float64), B)
    assert estimate.se_bits_per_byte == pytest.approx(expected, rel=1e-12)
    assert estimate.kl_bits_per_byte == pytest.approx(mean_sq / 2 / (B * LN2), rel=1e-12)


def test_clip_low_raises_values_below_the_quantile():
    l = torch.arange(100, dtype=torch.float64)  # 2% quantile, linear interpolation: 1.98
    clipped = clip_low(l, 0.02)
    assert clipped[:2].tolist() == pytest.approx([1.98, 1.98], abs=1e-12)
    assert torch.equal(clipped[2:], l[2:])
    assert torch.equal(clip_low(l, 0.0), l)
    rows = torch.stack([l, 10 * l])
    assert clip_low(rows, 0.02)[1, 0].item() == pytest.approx(19.8, abs=1e-12)


def test_clipping_is_applied_to_each_vector_before_differencing():
    l_a, l_b = randn(400, seed=6, scale=5.0) - 200, randn(400, seed=7, scale=5.0) - 200
    l_a[0] = -5000.0  # one garbled text that model a finds absurd
    plain, clipped = estimate_kl(l_a, l_b, B), estimate_kl(l_a, l_b, B, clip_quantile=0.02)
    by_hand = estimate_kl(clip_low(l_a, 0.02), clip_low(l_b, 0.02), B)
    assert clipped.clipped_quantile == 0.02 and plain.clipped_quantile is None
    assert clipped.kl_bits_per_byte == pytest.approx(by_hand.kl_bits_per_byte, rel=1e-12)
    assert clipped.kl_bits_per_byte < plain.kl_bits_per_byte / 50


def test_per_group_kl_centres_within_each_group():
    groups = ["ArXiv"] * 200 + ["Github"] * 100 + ["Enron Emails"]
    text_bytes = torch.tensor([1000.0] * 200 + [500.0] * 100 + [300.0], dtype=torch.float64)
    arxiv, github = with_population_variance(200, 2.0, seed=8), with_population_variance(100, 0.5, seed=9)
    # Each domain gets its own cross-entropy gap; within-domain KL must ignore it.
    d = torch.cat([arxiv + 30.0, github - 30.0, torch.tensor([7.0], dtype=torch.float64)])
    l_b = randn(301, seed=10, scale=40.0) - 500
    result = per_group_kl(l_b + d, l_b, groups, text_bytes)
    assert list(result) == ["ArXiv", "Github"]  # a single text has no spread: left out
    assert result["ArXiv"].kl_bits_per_byte == pytest.approx(2.0 / 2 / (1000 * LN2), rel=1e-9)
    assert result["Github"].kl_bits_per_byte == pytest.approx(0.5 / 2 / (500 * LN2), rel=1e-9)
    assert result["ArXiv"].ce_gap_nats == pytest.approx(30.0, abs=1e-9)
    assert result["Github"].ce_gap_nats == pytest.approx(-30.0, abs=1e-9)
    assert (result["Github"].n_texts, result["Github"].mean_bytes) == (100, 500.0)
    assert estimate_kl(l_b + d, l_b, B).kl_nats > 100  # the pooled estimate sees the gaps


def test_per_group_kl_matches_estimate_kl_on_each_subset():
    l_a, l_b = randn(60, seed=11), randn(60, seed=12)
    groups = [i % 3 for i in range(60)]
    text_bytes = 100.0 + torch.arange(60, dtype=torch.float64)
    result = per_group_kl(l_a, l_b, groups, text_bytes)
    for group in range(3):
        rows = torch.arange(group, 60, 3)
        expected = estimate_kl(l_a[rows], l_b[rows], text_bytes[rows].mean().item())
        assert result[group] == expected
    assert per_group_kl(l_a, l_b, torch.tensor(groups), text_bytes) == result  # id tensors work too


def test_double_centre_zeroes_row_and_column_means():
    Q = double_centre(randn(6, 50, seed=13, scale=10.0) - 300)
    assert Q.mean(dim=0).abs().max() < 1e-12
    assert Q.mean(dim=1).abs().max() < 1e-12


@settings(max_examples=15, deadline=None)
@given(seed=SEEDS, k=st.integers(2, 8), n=st.integers(2, 400))
def test_model_map_distances_are_the_pairs_estimates(seed, k, n):
    """The map's squared distances are what `mixalign kl` reports for each pair (estimate_kl)."""
    L = randn(k, n, seed=seed, scale=20.0) - 300 + randn(k, 1, seed=seed + 1, scale=50.0)
    Q = model_map(L, B)
    for i in range(k):
        for j in range(k):
            expected = estimate_kl(L[i], L[j], B).kl_bits_per_byte
            assert ((Q[i] - Q[j]) ** 2).sum().item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_pca_of_models_on_a_line_explains_everything_with_one_axis():
    base, direction = randn(300, seed=14, scale=30.0), randn(300, seed=15)
    steps = torch.tensor([0.0, 0.5, 1.0, 2.0, 3.5], dtype=torch.float64)
    Q = model_map(base + steps[:, None] * direction, B)
    coords, ratio = pca_2d(Q)
    assert ratio[0].item() == pytest.approx(1.0, abs=1e-9)
    assert ratio[1].item() == pytest.approx(0.0, abs=1e-9)
    assert coords[:, 1].abs().max() < 1e-9
    gaps = (coords[:, None, 0] - coords[None, :, 0]) ** 2  # 1-D distances are the KLs
    L = base + steps[:, None] * direction
    pairs = torch.tensor([[estimate_kl(a, b, B).kl_bits_per_byte for b in L] for a in L], dtype=torch.float64)
    assert torch.allclose(gaps, pairs, atol=1e-12)
    assert coords[:, 0].abs().argmax() == coords[:, 0].argmax()  # sign fixed


def test_pca_ratios_sum_to_at_most_one():
    coords, ratio = pca_2d(model_map(randn(7, 100, seed=16), B))
    assert coords.shape == (7, 2)
    assert ratio[0] >= ratio[1] > 0 and ratio.sum() <= 1 + 1e-12


def test_kl_estimate_is_a_plain_record():
    estimate = estimate_kl(randn(10, seed=17), randn(10, seed=18), B)
    assert isinstance(estimate, KLEstimate) and isinstance(estimate.kl_bits_per_byte, float)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: estimate_kl(torch.zeros(5), torch.zeros(6), B), "same texts"),
        (lambda: estimate_kl(torch.zeros(1), torch.zeros(1), B), "N >= 2"),
        (lambda: estimate_kl(torch.zeros(2, 3), torch.zeros(2, 3), B), "1-D"),
        (lambda: estimate_kl(torch.tensor([0.0, math.nan]), torch.zeros(2), B), "non-finite"),
        (lambda: estimate_kl(torch.zeros(5), torch.zeros(5), 0.0), "mean_bytes"),
        (lambda: estimate_kl(torch.zeros(5), torch.zeros(5), B, clip_quantile=1.0), "quantile"),
        (lambda: per_group_kl(torch.zeros(4), torch.zeros(4), ["a"] * 3, torch.ones(4)), "one group"),
        (lambda: model_map(torch.zeros(3, 1), B), "N >= 2"),
        (lambda: pca_2d(torch.zeros(1, 5)), "at least 2 models"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
