"""The repetition warning of `AlignedMixture`: how many times a round reads each domain's training tokens."""

import logging
from types import SimpleNamespace

import numpy as np
import pytest

from mixalign.callbacks.mixture import AlignedMixture
from mixalign.mixture.repetition import cap_shares, passes, share_caps


def test_passes_are_the_round_s_share_over_the_domain_s_tokens():
    assert np.allclose(passes([0.5, 0.25, 0.25], 1000, [250, 2000, 0]), [2.0, 0.125, 250.0])  # an empty domain: 1


def test_a_round_that_repeats_a_small_domain_says_so(caplog):
    """The demo's email case: 1/8 of 400 steps x 2,048 tokens over its 33,045 training tokens is 3.1 passes."""
    data = SimpleNamespace(count=lambda domain, split: {"email": 33_045, "code": 10_000_000}[domain])
    trainer = SimpleNamespace(datamodule=SimpleNamespace(batch_size=16, block_size=128, data=data),
                              accumulate_grad_batches=1, world_size=1)
    result = SimpleNamespace(weights=np.array([0.125, 0.875]), domains=["email", "code"])
    with caplog.at_level(logging.INFO):
        AlignedMixture()._warn_repetition(trainer, result, 400)
    (line,) = [r.getMessage() for r in caplog.records if "more than once" in r.getMessage()]
    assert "email 3.1x" in line and "code" not in line
    caplog.clear()
    with caplog.at_level(logging.INFO):
        AlignedMixture()._warn_repetition(trainer, result, 100)  # 0.8 passes: nothing to say
    assert not [r for r in caplog.records if "more than once" in r.getMessage()]
    assert passes([0.125], 400 * 16 * 128, [33_045])[0] == pytest.approx(3.098, abs=1e-3)


def test_capped_shares_stay_under_their_caps_and_keep_the_rest_in_proportion():
    w = cap_shares([0.5, 0.3, 0.2], [0.2, 1.0, 1.0])
    assert np.allclose(w, [0.2, 0.48, 0.32])  # a's excess 0.3 goes to b and c as 3 : 2
    w = cap_shares([0.5, 0.3, 0.2], [0.2, 0.35, 1.0])  # b goes over only once a's excess arrives
    assert np.allclose(w, [0.2, 0.35, 0.45])
    assert np.allclose(cap_shares([0.5, 0.5], [0.2, 0.3]), [0.4, 0.6])  # no mixture fits: equal passes
    assert np.allclose(cap_shares([1.0, 0.0, 0.0], [0.5, 1.0, 1.0]), [0.5, 0.25, 0.25])
    assert np.allclose(cap_shares([0.1, 0.9], [0.5, 1.0]), [0.1, 0.9])  # under its caps: unchanged


@pytest.mark.parametrize("seed", range(20))
def test_capping_any_mixture_gives_a_mixture_within_the_caps(seed):
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.full(6, 0.5))
    caps = rng.uniform(0.05, 0.6, 6)
    out = cap_shares(w, caps)
    assert out.sum() == pytest.approx(1.0) and (out >= 0).all()
    if caps.sum() > 1:
        assert (out <= caps + 1e-9).all()
        free = out < caps - 1e-9  # the uncapped keep their relative weights
        assert np.allclose(out[free] / out[free].sum(), w[free] / w[free].sum())


def test_share_caps_read_each_domain_at_most_max_epochs_times():
    caps = share_caps(2.0, 400 * 16 * 128, [33_045, 10_000_000])
    assert passes(caps, 400 * 16 * 128, [33_045, 10_000_000]) == pytest.approx([2.0, 2.0])


def test_a_mixture_whose_every_domain_probe_moved_away_says_so():
    from mixalign.callbacks.mixture import moving_away_note

    away = SimpleNamespace(domain_exact_change=np.array([0.01, 0.3, 0.002]), domain_cosines=np.array([0.1, -0.2, 0.3]))
    note = moving_away_note(away)
    assert note.startswith("warning: every domain probe moved the model away") and "+0.0020 to +0.3000" in note
    one_closer = SimpleNamespace(domain_exact_change=np.array([0.01, -0.001, 0.002]), domain_cosines=np.ones(3))
    assert moving_away_note(one_closer) == ""
    vectors_only = SimpleNamespace(domain_exact_change=None, domain_cosines=np.array([-0.1, 0.0, -0.3]))
    assert "no domain probe moved the model toward the target" in moving_away_note(vectors_only)
    assert moving_away_note(SimpleNamespace(domain_exact_change=None, domain_cosines=np.array([-0.1, 0.2]))) == ""
