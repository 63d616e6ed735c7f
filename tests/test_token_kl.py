"""Exact token-level KL: against a brute-force double loop, identities, units and per-domain means."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mixalign.llvec.models import score_and_exact_kl
from mixalign.llvec.scoring import score_token_ids
from mixalign.llvec.token_kl import (
    exact_token_kl,
    kl_both_ways,
    mean_kl,
    per_domain_kl,
    restrict_vocab,
)
from mixalign.model.nanogpt import GPT, GPTConfig

VOCAB = 50


def tiny_gpt(seed: int, block_size: int, n_embd: int = 32, vocab_size: int = VOCAB) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=n_embd, block_size=block_size, vocab_size=vocab_size)).eval()
    with torch.no_grad():  # sharpen the distributions so the two models differ by more than init noise
        model.lm_head.weight.mul_(8.0)
    return model


def texts(seed=0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    lengths = [1, 2, 9, 16, 17, 30, 55] + rng.integers(2, 45, 6).tolist()
    return [rng.integers(0, VOCAB, n).tolist() for n in lengths]


def window_starts(n_targets: int, context: int) -> list[int]:
    """Independent restatement of the sliding windows: stride context // 2, last one flush right."""
    if n_targets <= context:
        return [0]
    starts, s = [], 0
    while True:
        s = min(s, n_targets - context)
        starts.append(s)
        if s + context >= n_targets:
            return starts
        s += max(1, context // 2)


def brute_force_kl(a: GPT, b: GPT, ids: list[int], context: int) -> tuple[float, float]:
    """Sum over targets j of sum over the vocabulary of p log(p / q), in float64, one window per target."""
    if len(ids) < 2:
        return 0.0, 0.0
    starts = window_starts(len(ids) - 1, context)
    forward = backward = 0.0
    for j in range(1, len(ids)):
        s = next(s for s in starts if s + 1 <= j <= s + context)
        window = torch.tensor([ids[s : s + context]])
        with torch.no_grad():
            p = F.softmax(a(window)[0, j - s - 1].double(), -1).tolist()
            q = F.softmax(b(window)[0, j - s - 1].double(), -1).tolist()
        for v in range(VOCAB):
            forward += p[v] * math.log(p[v] / q[v])
            backward += q[v] * math.log(q[v] / p[v])
    return forward, backward


def distribution(model: GPT):
    return lambda inputs, keep: model.next_token_logprobs(inputs, keep, rows_per_chunk=7)


@pytest.mark.parametrize("max_batch_tokens", [1, 64, 4096])
def test_exact_kl_equals_brute_force_double_loop(max_batch_tokens):
    a, b = tiny_gpt(0, block_size=16), tiny_gpt(1, block_size=24)
    context = 16  # the smaller block
    ids = texts()
    got = exact_token_kl(distribution(a), distribution(b), ids, context, VOCAB, max_batch_tokens=max_batch_tokens)
    expected = np.array([brute_force_kl(a, b, t, context) for t in ids])
    assert got.a_to_b.dtype == np.float64
    np.testing.assert_allclose(got.a_to_b, expected[:, 0], atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(got.b_to_a, expected[:, 1], atol=1e-6, rtol=1e-6)
    assert got.positions.tolist() == [max(0, len(t) - 1) for t in ids]
    assert got.a_to_b[4:].min() > 0.1  # the pair really differs: the comparison is not of zeros


def test_the_kl_pass_gives_model_a_log_likelihoods_as_scoring_does():
    """Probes reuse exact KL's pass for their log-likelihood vector: it must equal scoring's, long
    (windowed) texts included, and a model on the b side must not leak into it."""
    a, b = tiny_gpt(0, block_size=16), tiny_gpt(1, block_size=24)
    ids = texts()
    assert max(len(t) for t in ids) > 16  # some texts need more than one window
    got = exact_token_kl(distribution(a), distribution(b), ids, 16, VOCAB, max_batch_tokens=64)
    scored = score_token_ids(a.token_logprobs, ids, 16)
    np.testing.assert_allclose(got.a_logp, scored.values, rtol=1e-6, atol=1e-5)
    assert got.a_logp.min() < -1  # real log-likelihoods, not zeros
    swapped = exact_token_kl(distribution(b), distribution(a), ids, 16, VOCAB)
    assert np.abs(swapped.a_logp - got.a_logp).max() > 0.1


@pytest.mark.parametrize("target_block", [24, 8])
def test_one_measurement_gives_scoring_log_likelihoods_and_the_exact_kl(target_block):
    """What probes and the callback call: the model's log-likelihoods equal scoring's whether the
    target's context covers the model's (one pass) or not (scored apart, at the model's own
    context), and the KL is the pair's exact KL at the smaller context."""
    a, b = tiny_gpt(0, block_size=16), tiny_gpt(1, block_size=target_block)
    target = SimpleNamespace(distribution_fn=distribution(b), context=target_block, vocab_size=VOCAB)
    ids = texts(seed=3)
    scores, kl = score_and_exact_kl(a, target, ids, max_batch_tokens=64)
    np.testing.assert_allclose(scores.values, score_token_ids(a.token_logprobs, ids, 16).values, rtol=1e-6, atol=1e-5)
    direct = exact_token_kl(distribution(a), distribution(b), ids, min(16, target_block), VOCAB)
    np.testing.assert_allclose(kl.a_to_b, direct.a_to_b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(kl.b_to_a, direct.b_to_a, rtol=1e-5, atol=1e-6)
    alone, none = score_and_exact_kl(a, None, ids)
    assert none is None and np.allclose(alone.values, scores.values, atol=1e-5)


def test_identical_models_give_zero_and_bos_scores_every_token():
    a = tiny_gpt(0, block_size=16)
    ids = texts(seed=1)
    same = exact_token_kl(distribution(a), distribution(a), ids, 16, VOCAB, bos_id=VOCAB - 1)
    assert np.all(same.a_to_b == 0.0) and np.all(same.b_to_a == 0.0)
    assert same.positions.tolist() == [len(t) for t in ids]


def test_padded_heads_are_compared_on_the_tokenizer_ids_only():
    """A head padded past the tokenizer (extra rows) is renormalised over the real ids."""
    a, b = tiny_gpt(0, block_size=16), tiny_gpt(1, block_size=16)
    padded = tiny_gpt(1, block_size=16, vocab_size=VOCAB + 14)
    with torch.no_grad():
        padded.wte.weight[:VOCAB] = b.wte.weight  # same real rows; the 14 extra rows keep their own values
        for name, param in padded.named_parameters():
            if name != "wte.weight":
                param.copy_(b.get_parameter(name))
    ids = [t for t in texts(seed=2) if max(t, default=0) < VOCAB]
    plain = exact_token_kl(distribution(a), distribution(b), ids, 16, VOCAB)
    restricted = exact_token_kl(distribution(a), distribution(padded), ids, 16, VOCAB)
    np.testing.assert_allclose(restricted.a_to_b, plain.a_to_b, atol=1e-5)
    logits = torch.randn(3, VOCAB + 14)
    np.testing.assert_allclose(restrict_vocab(F.log_softmax(logits, -1), VOCAB).numpy(),
                               F.log_softmax(logits[:, :VOCAB], -1).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="fewer than the tokenizer"):
        restrict_vocab(torch.zeros(2, 10), VOCAB)


def test_kl_both_ways_closed_form():
    p = torch.tensor([[0.5, 0.5], [0.9, 0.1]]).log()
    q = torch.tensor([[0.25, 0.75], [0.9, 0.1]]).log()
    forward, backward = kl_both_ways(p, q)
    assert forward[0].item() == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), abs=1e-7)
    assert backward[0].item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), abs=1e-7)
    assert forward[1].item() == pytest.approx(0.0, abs=1e-7)


def test_mean_kl_units_and_standard_error():
    values = np.array([1.0, 2.0, 3.0, 6.0])
    result = mean_kl(values, mean_bytes=100.0)
    assert result.bits_per_byte == pytest.approx(3.0 / (100 * math.log(2)))
    assert result.se == pytest.approx(values.std(ddof=1) / 2 / (100 * math.log(2)))
    by_domain = per_domain_kl(values, ["x", "y", "x", "y"], [100, 300, 100, 300])
    assert list(by_domain) == ["x", "y"]
    assert by_domain["x"].bits_per_byte == pytest.approx(2.0 / (100 * math.log(2)))
    assert by_domain["y"].bits_per_byte == pytest.approx(4.0 / (300 * math.log(2)))
    with pytest.raises(ValueError, match="one domain and one byte length per text"):
        per_domain_kl(values, ["x"], [1, 2, 3, 4])


def test_memoized_target_gives_the_same_numbers_and_runs_its_body_once(monkeypatch):
    from mixalign.data.tokenizer import load_tokenizer
    from mixalign.llvec.models import model_from_gpt

    tok = load_tokenizer("demo-4k")
    student, target = (tiny_gpt(s, block_size=16, vocab_size=tok.get_vocab_size()) for s in (0, 1))
    plain = model_from_gpt(target, tok, "target")
    memo = model_from_gpt(target, tok, "target", memoize=True)
    ids = [list(range(5, 40)), list(range(100, 120))]
    expected = exact_token_kl(distribution(student), plain.distribution_fn, ids, 16, tok.get_vocab_size())
    calls = []
    body = target.hidden_states
    monkeypatch.setattr(target, "hidden_states", lambda idx: calls.append(1) or body(idx))
    for _ in range(3):
        got = exact_token_kl(distribution(student), memo.distribution_fn, ids, 16, tok.get_vocab_size())
        np.testing.assert_array_equal(got.a_to_b, expected.a_to_b)
    assert len(calls) == 1  # one batch, computed once, reused twice
