"""The measured selection and the weight schedule: pure functions, no training."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mixalign.data.schedule import WeightSchedule
from mixalign.errors import MixalignError
from mixalign.mixture.candidates import candidate_mixtures, kl_softmin
from mixalign.mixture.rounds import round_end, round_starts
from mixalign.mixture.selection import Measured, paired_difference, select
from mixalign.model.nanogpt import GPT, GPTConfig
from mixalign.model.optim import lr_at, param_groups


def measured(name: str, terms, weights=None) -> Measured:
    return Measured(name, np.asarray(weights if weights is not None else [0.5, 0.5]), np.asarray(terms, dtype=float))


def test_candidates_hold_the_solution_its_shrinkages_uniform_and_natural():
    solution, natural = np.array([1.0, 0.0, 0.0, 0.0]), np.array([4.0, 2.0, 1.0, 1.0])
    c = candidate_mixtures(solution, natural)
    assert list(c) == ["uniform", "natural", "solution", "shrink 0.25", "shrink 0.50", "shrink 0.75"]
    assert np.allclose(c["natural"], natural / 8) and np.allclose(c["shrink 0.50"], [0.625, 0.125, 0.125, 0.125])
    assert all(math.isclose(w.sum(), 1.0) for w in c.values())


def test_kl_softmin_weights_follow_the_domain_probes_exact_kl_and_drop_no_domain():
    kl = np.array([0.0421, 0.0256, 0.0524, 0.0358, 0.0239, 0.0414, 0.0279, 0.0557])  # robustness target 1's probes
    w = kl_softmin(kl, 0.5)
    assert math.isclose(w.sum(), 1.0) and (w > 0).all()
    assert list(np.argsort(-w)) == list(np.argsort(kl))  # closer to the target: more weight
    # exp(-(k - min) / (s * std)), normalised, by hand for the two closest domains
    assert w[1] / w[4] == pytest.approx(math.exp(-(0.0256 - 0.0239) / (0.5 * kl.std())), rel=1e-12)
    sharper, flatter = kl_softmin(kl, 0.25), kl_softmin(kl, 1.0)
    assert sharper.max() > w.max() > flatter.max()  # a lower temperature concentrates the weight
    assert w.max() < 0.5 < sharper.max()
    assert np.allclose(kl_softmin(np.full(8, 0.03), 0.5), 1 / 8)  # no information: uniform
    c = candidate_mixtures(np.array([1.0, 0, 0, 0, 0, 0, 0, 0]), np.ones(8), kl, softmin_scales=(0.5, 1.0, 2.0))
    assert [n for n in c if n.startswith("kl-softmin")] == ["kl-softmin 0.50", "kl-softmin 1.00", "kl-softmin 2.00"]
    assert np.allclose(c["kl-softmin 0.50"], w)


def test_a_uniform_solution_is_measured_once():
    c = candidate_mixtures(np.full(4, 0.25), np.ones(4))
    assert list(c) == ["uniform"]  # natural == uniform here too, and every shrinkage of uniform is uniform


def test_paired_difference_cancels_what_the_texts_share():
    rng = np.random.default_rng(0)
    shared = rng.gamma(2.0, 1.0, 400)  # text difficulty: large, common to both
    a, b = measured("a", shared + 0.01), measured("b", shared + rng.normal(0, 0.001, 400))
    diff, se = paired_difference(a, b)
    assert diff == pytest.approx(0.01, abs=0.0005) and se < 1e-4 < shared.std() / 20


LONG_RUN = (2.0, 0.014)  # a, b of the long-run model: twice the probe's margin, 0.014 bits/byte a nat of concentration


def test_a_mixture_worse_than_uniform_at_probe_time_is_never_kept():
    """The failure the selection exists for: the solver's sparse mixture is far worse than uniform."""
    rng = np.random.default_rng(1)
    base = rng.gamma(2.0, 0.01, 300)
    cands = [measured("uniform", base), measured("solution", base * 2.0, [1, 0]), measured("shrink 0.50", base * 1.2)]
    chosen = select(cands, "exact KL", LONG_RUN)
    assert chosen.chosen == "uniform" and chosen.best == "uniform" and chosen.predicted == 0.0


def test_a_large_significant_gain_is_kept_and_noise_is_not():
    rng = np.random.default_rng(3)
    base = rng.gamma(2.0, 0.01, 300)
    clear = select([measured("uniform", base), measured("solution", base * 0.7)], "exact KL", LONG_RUN)
    assert clear.chosen == "solution"
    assert clear.predicted == pytest.approx(2.0 * -0.3 * base.mean(), rel=1e-9)  # weights [0.5, 0.5]: no concentration
    noise = rng.normal(0, 0.2, 300)
    noise -= noise.mean()  # the lowest mean of the three, by 30%, but far inside its standard error
    s = select([measured("uniform", base), measured("solution", base * 0.7 + noise)], "exact KL", LONG_RUN)
    assert s.best == "solution" and s.chosen == "uniform" and "measurably closer" in s.reason


def test_the_long_run_model_prefers_a_flatter_mixture_that_a_plain_argmin_would_not():
    """Sharp is 20% below uniform at probe time, flat 17%; over the main run the model expects sharp's
    concentration (KL to uniform, 0.49 nats against 0.05) to cost more than its extra 3%: flat is kept.
    A plain argmin keeps sharp."""
    rng = np.random.default_rng(5)
    base = rng.gamma(2.0, 0.01, 300)
    sharp, flat = [0.95, 0.05], [0.65, 0.35]
    cands = [measured("uniform", base), measured("sharp", base * 0.80, sharp), measured("flat", base * 0.83, flat)]
    s = select(cands, "exact KL", LONG_RUN)
    assert s.best == "sharp" and s.chosen == "flat"
    flat_concentration = 0.65 * math.log(1.3) + 0.35 * math.log(0.7)
    assert s.predicted == pytest.approx(2.0 * -0.17 * base.mean() + 0.014 * flat_concentration, rel=1e-9)
    assert select(cands, "exact KL", (1.0, 0.0)).chosen == "sharp"  # no concentration cost: the probes' best
    costly = select(cands, "exact KL", (0.1, 1.0))  # concentration outweighs every probe gain: uniform
    assert costly.chosen == "uniform" and "predicted" in costly.reason


def test_selection_needs_uniform_as_reference():
    with pytest.raises(ValueError, match="uniform"):
        select([measured("solution", [1.0, 2.0])], "exact KL", LONG_RUN)


def test_rounds_split_the_steps_after_the_warmup():
    assert round_starts(100, 1) == [0]
    assert round_starts(100, 4, warmup_steps=20) == [20, 40, 60, 80]
    assert round_end([20, 40, 60, 80], 40, 100) == 60 and round_end([20, 40, 60, 80], 80, 100) == 100
    for bad, message in (((0, 1), "max_steps"), ((100, 1, 100), "warmup_steps"), ((10, 11), "rounds")):
        with pytest.raises(MixalignError, match=message):
            round_starts(*bad)


def test_weight_schedule_applies_each_entry_until_the_next_and_round_trips():
    s = WeightSchedule(["a", "b"], {0: [0.5, 0.5], 30: [0.9, 0.1]})
    assert s.at(0).tolist() == [0.5, 0.5] and s.at(29).tolist() == [0.5, 0.5] and s.at(30).tolist() == [0.9, 0.1]
    again = WeightSchedule(["a", "b"])
    again.load_state_dict(s.state_dict(), check=lambda w: [w["a"], w["b"]])
    assert again.at(1000).tolist() == [0.9, 0.1] and again.has(30) and not again.has(29)
    with pytest.raises(MixalignError, match="no domain weights for step 3"):
        WeightSchedule(["a", "b"], {5: [1, 0]}).at(3)


def test_learning_rate_warms_up_linearly_then_follows_a_cosine_to_the_floor():
    assert lr_at(0, 1.0, 0.1, 10, 110) == pytest.approx(0.1) and lr_at(9, 1.0, 0.1, 10, 110) == pytest.approx(1.0)
    assert lr_at(60, 1.0, 0.1, 10, 110) == pytest.approx(0.55)  # half way through the cosine
    assert lr_at(110, 1.0, 0.1, 10, 110) == lr_at(500, 1.0, 0.1, 10, 110) == pytest.approx(0.1)
    steps = [lr_at(s, 1.0, 0.1, 10, 110) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(steps, steps[1:]))


def test_param_groups_decay_matrices_only():
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=32))
    decayed, plain = param_groups(model, 0.1)
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(p.dim() < 2 for p in plain["params"])
    total = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for g in (decayed, plain) for p in g["params"]) == total
    assert any(p is model.wte.weight for p in decayed["params"])  # tied with lm_head: listed once
    assert len({id(p) for g in (decayed, plain) for p in g["params"]}) == len(decayed["params"]) + len(plain["params"])
