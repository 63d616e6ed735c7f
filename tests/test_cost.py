"""The method's cost account (mixture/cost.py): the arithmetic, the candidates a config plans, and what a
memoized target's repeated reads cost."""

import pytest
from test_token_kl import tiny_gpt

from mixalign.data.tokenizer import load_tokenizer
from mixalign.llvec.models import model_from_gpt
from mixalign.mixture.cost import FORWARD_SHARE, method_cost, planned_cost


def test_the_account_adds_training_and_a_third_of_the_forward_passes():
    """8 domain probes of 20 steps, 3 candidates of 40, a text set of 1,000 tokens read by the base, the
    11 probes, and a target whose repeats cost 0.4 of a forward pass."""
    cost = method_cost(8, 20, 3, 40, 0, 2048, 1000, 0.4, 819_200)
    assert cost.probes == 11
    assert cost.probe_train_tokens == (8 * 20 + 3 * 40) * 2048
    assert cost.probe_score_tokens == round((12 + 1 + 11 * 0.4) * 1000)
    assert cost.share == pytest.approx(((8 * 20 + 3 * 40) * 2048 + FORWARD_SHARE * 17_400) / 819_200)
    assert "11 probe runs" in cost.line() and f"{cost.share:.1%}" in cost.line()
    without_target = method_cost(8, 20, 3, 40, 0, 2048, 1000, None, 819_200)
    assert without_target.probe_score_tokens == 12 * 1000  # a saved vector as target: no exact KL, no target reads


def test_a_plan_counts_each_generator_s_candidates_and_uniform():
    plan = lambda cands, scales: planned_cost(cands, "measured", 8, 20, 40, 2048, 1000, 1.0, 819_200,  # noqa: E731
                                              softmin_scales=scales)
    assert plan(["solution", "kl-softmin"], (2.0,)).probes == 8 + 3
    assert plan(["solution", "kl-softmin"], (0.5, 1.0, 2.0)).probes == 8 + 5
    assert plan(["kl-softmin"], (2.0,)).probe_train_tokens == (8 * 20 + 2 * 40) * 2048
    solver = planned_cost(["solution"], "solver", 8, 20, 40, 2048, 1000, 1.0, 819_200)
    assert solver.probes == 8 and solver.probe_train_tokens == 8 * 20 * 2048  # the paper's solver trains no candidate


def test_a_memoized_target_repeats_only_its_head():
    """The head's share of a forward pass, V / (12 L d + V), for a memoized model; 1 for one that is not."""
    tok = load_tokenizer("demo-4k")
    gpt = tiny_gpt(0, block_size=16, vocab_size=tok.get_vocab_size())
    v = gpt.config.vocab_size
    memoized = model_from_gpt(gpt, tok, "target", memoize=True)
    assert memoized.repeat_cost == pytest.approx(v / (12 * 2 * 32 + v))
    assert model_from_gpt(gpt, tok, "model").repeat_cost == 1.0
