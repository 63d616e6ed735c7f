"""Sampling and Monte Carlo KL: the KV cache, unbiasedness against exact-along-path KL, seeds, tokenizers."""

import numpy as np
import pytest
import torch
from test_token_kl import VOCAB, distribution, tiny_gpt

from mixalign.data.tokenizer import load_tokenizer
from mixalign.llvec.models import model_from_gpt
from mixalign.llvec.montecarlo import monte_carlo_kl, ratio_kl, sample_sequences
from mixalign.llvec.scoring import score_token_ids
from mixalign.llvec.token_kl import exact_token_kl
from mixalign.model.nanogpt import KVCache

START, END = 0, 1


def decoder(model):
    def make():
        cache = KVCache(model.config.n_layer)
        return lambda ids: model.decode_step(ids, cache)
    return make


def test_kv_cache_decoding_equals_a_full_forward_pass():
    model = tiny_gpt(3, block_size=24)
    ids = torch.tensor([[START, 5, 9, 2, 7, 7, 3]])
    cache = KVCache(model.config.n_layer)
    with torch.no_grad():
        stepped = [model.decode_step(ids[:, :1], cache)]
        stepped += [model.decode_step(ids[:, t : t + 1], cache) for t in range(1, ids.shape[1])]
        full = torch.log_softmax(model(ids)[0].float(), -1)
    np.testing.assert_allclose(torch.cat(stepped).numpy(), full.numpy(), atol=1e-5)
    assert cache.length == ids.shape[1]
    with pytest.raises(ValueError, match="one token at a time"):
        model.decode_step(ids[:, :2], cache)


def test_sampled_log_probabilities_equal_teacher_forced_scores_and_seeds_fix_samples():
    model = tiny_gpt(3, block_size=24)
    one = sample_sequences(decoder(model), [START], END, VOCAB, n=20, max_new_tokens=24, seed=7, batch_size=20)
    again = sample_sequences(decoder(model), [START], END, VOCAB, n=20, max_new_tokens=24, seed=7, batch_size=3)
    other = sample_sequences(decoder(model), [START], END, VOCAB, n=20, max_new_tokens=24, seed=8, batch_size=20)
    assert one.token_ids == again.token_ids  # a sample does not depend on its batch
    assert one.token_ids != other.token_ids
    assert all(len(ids) <= 24 for ids in one.token_ids)
    for ids, done in zip(one.token_ids, one.finished):
        assert (END in ids) == bool(done) and (not done or ids[-1] == END) and ids.count(END) <= 1
    scored = score_token_ids(model.token_logprobs, [[START] + ids for ids in one.token_ids], 24)
    np.testing.assert_allclose(one.logprob, scored.values, atol=1e-4)


def test_sampling_follows_the_model_distribution():
    """First tokens drawn from a model match its first next-token distribution (chi-square)."""
    from scipy.stats import chisquare

    model = tiny_gpt(4, block_size=8, vocab_size=6)
    draws = sample_sequences(decoder(model), [START], None, 6, n=3000, max_new_tokens=1, seed=0, batch_size=500)
    counts = np.bincount([ids[0] for ids in draws.token_ids], minlength=6)
    with torch.no_grad():
        p = torch.softmax(model(torch.tensor([[START]]))[0, 0].double(), -1).numpy()
    assert chisquare(counts, p * counts.sum()).pvalue > 1e-3


def test_path_log_ratio_agrees_with_exact_kl_along_the_paths():
    """Both estimate KL(a || b) of the sampling process; the exact sum has far less variance."""
    a, b = tiny_gpt(0, block_size=16), tiny_gpt(1, block_size=24)
    samples = sample_sequences(decoder(a), [START], END, VOCAB, n=400, max_new_tokens=16, seed=1)
    paths = [[START] + ids for ids in samples.token_ids]
    ratio = score_token_ids(a.token_logprobs, paths, 16).values - score_token_ids(b.token_logprobs, paths, 16).values
    along = exact_token_kl(distribution(a), distribution(b), paths, 16, VOCAB).a_to_b
    n_tokens = np.array([len(ids) for ids in samples.token_ids])  # any positive length works as the unit here
    mc, exact = ratio_kl(ratio, n_tokens), ratio_kl(along, n_tokens)
    assert exact.se < mc.se / 2
    assert abs(mc.bits_per_byte - exact.bits_per_byte) < 3 * np.hypot(mc.se, exact.se)
    assert exact.bits_per_byte > 0.05  # a real difference between the two models


def test_ratio_kl_is_a_ratio_of_means():
    result = ratio_kl([2.0, 4.0], [10, 30])
    assert result.bits_per_byte == pytest.approx(6.0 / 40 / np.log(2))
    with pytest.raises(ValueError):
        ratio_kl([1.0], [1, 2])


def language_model(tokenizer: str, seed: int, block_size: int = 32):
    tok = load_tokenizer(tokenizer)
    return model_from_gpt(tiny_gpt(seed, block_size=block_size, vocab_size=tok.get_vocab_size()), tok, tokenizer)


def test_monte_carlo_kl_between_models_of_different_tokenizers():
    a, b = language_model("gpt2", 0), language_model("demo-4k", 1)
    result = monte_carlo_kl(a, b, n_samples=12, seed=3, max_new_tokens=10, batch_size=5)
    assert result.path is None and result.path_exact is None and result.canonical is None  # no shared ids
    assert result.text.n == 12 and np.isfinite(result.text.bits_per_byte) and result.text.se > 0
    assert result.mean_bytes > 0
    again = monte_carlo_kl(a, b, n_samples=12, seed=3, max_new_tokens=10, batch_size=12)
    assert again.text == result.text
    back = monte_carlo_kl(b, a, n_samples=12, seed=3, max_new_tokens=10)
    assert back.text != result.text


def test_monte_carlo_kl_with_a_shared_tokenizer_reports_the_path_figures():
    a, b = language_model("demo-4k", 0, block_size=24), language_model("demo-4k", 1, block_size=16)
    result = monte_carlo_kl(a, b, n_samples=40, seed=0)
    assert result.path is not None and result.path_exact is not None and 0 <= result.canonical <= 1
    assert result.path_exact.se < result.path.se
    itself = monte_carlo_kl(a, a, n_samples=10, seed=0)
    assert itself.path_exact.bits_per_byte == 0.0 and itself.path.bits_per_byte == 0.0
