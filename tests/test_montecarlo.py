"""Sampling and Monte Carlo KL: the KV cache, unbiasedness against exact-along-path KL, seeds, tokenizers."""

import math

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


# -- the reported figures against the exact KL, by enumerating every sequence ----------------------

WORDS = ["<|endoftext|>", "a", "bb", "ccc"]  # the end token and three words of 1-3 bytes
HORIZON = 3


def word_model(seed: int):
    """A tiny GPT over a 4-word vocabulary whose tokenizer decodes and re-encodes every path as itself."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="a"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with one space
    tok.add_special_tokens(["<|endoftext|>"])
    return model_from_gpt(tiny_gpt(seed, block_size=8, vocab_size=len(WORDS)), tok, f"words {seed}")


def enumerated_kl(a, b) -> float:
    """KL(a || b) per byte over every sequence a can draw within HORIZON tokens, in bits: the sum over
    sequences of p_a log(p_a / p_b), over the expected bytes (what the ratio estimators converge to)."""
    def logprobs(model, prefix):
        with torch.no_grad():
            return model.distribution_fn(torch.tensor([[0] + prefix]), torch.ones(1, len(prefix) + 1, dtype=torch.bool))[-1]

    kl = expected_bytes = 0.0
    stack = [([], 0.0, 0.0)]
    while stack:
        prefix, la, lb = stack.pop()
        pa, pb = logprobs(a, prefix).double(), logprobs(b, prefix).double()
        for token in range(len(WORDS)):
            path, path_a, path_b = prefix + [token], la + float(pa[token]), lb + float(pb[token])
            if token == 0 or len(path) == HORIZON:  # ended, or cut at the horizon
                weight = math.exp(path_a)
                kl += weight * (path_a - path_b)
                expected_bytes += weight * len(a.decode([t for t in path if t != 0]).encode())
            else:
                stack.append((path, path_a, path_b))
    return kl / expected_bytes / math.log(2)


def test_monte_carlo_kl_matches_the_kl_enumerated_over_every_sequence():
    """Every figure monte_carlo_kl reports lies within 3 SE of the enumerated KL (here 1.2, 1.2 and
    0.7 SE). Fails when the estimator drops a term: with the paths built without the end token of
    finished samples (`ends` for `samples.token_ids` in `monte_carlo_kl`), `path` is 9 SE off and
    `path_exact` hundreds."""
    a, b = word_model(0), word_model(1)
    exact = enumerated_kl(a, b)
    result = monte_carlo_kl(a, b, n_samples=3000, seed=0, max_new_tokens=HORIZON, batch_size=500)
    assert result.canonical == 1.0 and result.horizon == HORIZON
    assert exact > 0.05  # the two models really differ
    for name in ("text", "path", "path_exact"):
        figure = getattr(result, name)
        assert abs(figure.bits_per_byte - exact) < 3 * figure.se, (name, figure, exact)
    assert result.headline is result.path_exact and result.path_exact.se < result.path.se
