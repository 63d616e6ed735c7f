"""The repetition warning of `AlignedMixture`: how many times a round reads each domain's training tokens."""

import logging
from types import SimpleNamespace

import numpy as np
import pytest

from mixalign.callbacks.mixture import AlignedMixture, passes


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
