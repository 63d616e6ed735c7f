import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mixalign.data.tokenizer import load_tokenizer
from mixalign.llvec.models import LanguageModel, load_model, model_from_gpt
from mixalign.llvec.scoring import ScoreResult, score_gpt, score_token_ids
from mixalign.llvec.textset import TextSet
from mixalign.model.hf_gpt2 import our_state_dict
from mixalign.model.module import NanoGPTModule
from mixalign.model.nanogpt import GPT, GPTConfig

VOCAB, CONTEXT = 50, 16


def tiny_gpt(seed=0, block_size=CONTEXT, vocab_size=VOCAB, n_embd=32) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=n_embd, block_size=block_size, vocab_size=vocab_size)).eval()


def trained_gpt() -> GPT:
    """A tiny GPT trained briefly on a periodic sequence, so its predictions are far from uniform."""
    model = tiny_gpt(seed=1)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    gen = torch.Generator().manual_seed(0)
    pattern = torch.arange(VOCAB) % 7
    for _ in range(40):
        starts = torch.randint(0, VOCAB - CONTEXT - 1, (8,), generator=gen)
        batch = torch.stack([pattern[s : s + CONTEXT + 1] for s in starts])
        loss = F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def random_ids(n_texts=25, max_len=60, seed=0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    lengths = [1, 2, CONTEXT, CONTEXT + 1, CONTEXT + 2, 3 * CONTEXT + 5] + rng.integers(2, max_len, n_texts).tolist()
    return [rng.integers(0, VOCAB, n).tolist() for n in lengths]


def forward_logprob_sum(model: GPT, ids: list[int]) -> float:
    """-sum cross-entropy over positions 1..n-1, one plain forward pass (text must fit the context)."""
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(x[:, :-1])
    return -F.cross_entropy(logits[0].double(), x[0, 1:], reduction="sum").item()


def window_reference(model: GPT, ids: list[int], context: int) -> tuple[float, list[int]]:
    """Independent window-by-window sum: target j is scored by the first window covering it."""
    n = len(ids)
    stride = context // 2
    starts, s = [], 0
    while True:
        s = min(s, n - 1 - context)
        starts.append(s)
        if s + context >= n - 1:
            break
        s += stride
    total, owner = 0.0, []
    for j in range(1, n):
        s = next(s for s in starts if s + 1 <= j <= s + context)
        with torch.no_grad():
            logits = model(torch.tensor([ids[s : s + context]]))
        total += F.log_softmax(logits[0, j - s - 1].float(), -1)[ids[j]].double().item()
        owner.append(j - s)  # left context of target j
    return total, owner


@pytest.fixture(scope="module", params=["random", "trained"])
def model(request):
    return tiny_gpt() if request.param == "random" else trained_gpt()


def test_batched_equals_one_at_a_time(model):
    ids = random_ids()
    batched = score_token_ids(model.token_logprobs, ids, CONTEXT, max_batch_tokens=16384)
    one_segment = score_token_ids(model.token_logprobs, ids, CONTEXT, max_batch_tokens=1)
    one_text = np.array([score_token_ids(model.token_logprobs, [t], CONTEXT).values[0] for t in ids])
    assert batched.values.dtype == np.float64
    np.testing.assert_allclose(batched.values, one_segment.values, atol=1e-4, rtol=0)
    np.testing.assert_allclose(batched.values, one_text, atol=1e-4, rtol=0)
    assert batched.n_tokens == sum(len(t) - 1 for t in ids)
    assert batched.tokens_per_text.tolist() == [len(t) - 1 for t in ids]
    small = score_token_ids(model.token_logprobs, ids, CONTEXT, max_batch_tokens=40)  # a few rows per batch
    np.testing.assert_allclose(batched.values, small.values, atol=1e-4, rtol=0)


def test_score_gpt_equals_reference_path(model):
    """score_gpt (head on scored rows only, chunked) equals scoring through the training path."""
    ids = random_ids(seed=2)
    reference = score_token_ids(model.token_logprobs, ids, CONTEXT, max_batch_tokens=1)
    fast = score_gpt(model, ids)
    np.testing.assert_allclose(fast.values, reference.values, atol=1e-4, rtol=0)
    assert fast.tokens_per_text.tolist() == reference.tokens_per_text.tolist()


def test_equals_forward_pass_cross_entropy(model):
    ids = [t for t in random_ids(seed=1) if len(t) <= CONTEXT + 1]
    result = score_token_ids(model.token_logprobs, ids, CONTEXT)
    assert result.n_windowed == 0
    expected = [forward_logprob_sum(model, t) if len(t) > 1 else 0.0 for t in ids]
    np.testing.assert_allclose(result.values, expected, atol=1e-4, rtol=0)
    assert result.values[0] == 0.0  # a one-token text has nothing to score


def test_sliding_windows_score_every_target_once(model):
    ids = random_ids(seed=2)
    result = score_token_ids(model.token_logprobs, ids, CONTEXT)
    assert result.tokens_per_text.tolist() == [len(t) - 1 for t in ids]
    assert result.n_windowed == sum(len(t) - 1 > CONTEXT for t in ids)
    for t, value in zip(ids, result.values):
        if len(t) - 1 > CONTEXT:
            expected, left_context = window_reference(model, t, CONTEXT)
            assert value == pytest.approx(expected, abs=1e-4)
            assert min(left_context[CONTEXT:]) >= CONTEXT - CONTEXT // 2  # later targets keep half a window


def test_odd_and_tiny_contexts_cover_all_targets():
    ids = [list(range(1, 40))]
    for context in (1, 2, 3, 5, 7):
        model = tiny_gpt(block_size=context)
        result = score_token_ids(model.token_logprobs, ids, context)
        assert result.tokens_per_text.tolist() == [38]
        expected, _ = window_reference(model, ids[0], context) if context > 1 else (None, None)
        if expected is not None:
            assert result.values[0] == pytest.approx(expected, abs=1e-4)


def test_bos_scores_every_real_token(model):
    bos = VOCAB - 1
    ids = [t for t in random_ids(seed=3) if len(t) <= CONTEXT]
    result = score_token_ids(model.token_logprobs, ids, CONTEXT, bos_id=bos)
    assert result.tokens_per_text.tolist() == [len(t) for t in ids]
    expected = [forward_logprob_sum(model, [bos] + t) for t in ids]
    np.testing.assert_allclose(result.values, expected, atol=1e-4, rtol=0)


def test_model_from_gpt_scores_a_textset():
    tok = load_tokenizer("gpt2")
    model = tiny_gpt(vocab_size=tok.get_vocab_size(), block_size=32)
    lm = model_from_gpt(model, tok, "tiny")
    assert isinstance(lm, LanguageModel) and lm.context == 32 and lm.bos_id is None
    ts = TextSet(("Hello world, this is a test.", "Another text. " * 20), ("a", "b"), {})
    result = lm.score(ts, max_batch_tokens=256)
    assert isinstance(result, ScoreResult) and result.n_windowed == 1
    ids = lm.encode_batch(ts.texts)
    assert ids[0] == tok.encode(ts.texts[0]).ids
    assert result.values[0] == pytest.approx(forward_logprob_sum(model, ids[0]), abs=1e-4)
    with pytest.raises(ValueError, match="vocabulary"):
        model_from_gpt(tiny_gpt(), tok, "too small")


# ---------------------------------------------------------------- checkpoints


def make_checkpoint(path, tokenizer_json=True, **hp):
    tok = load_tokenizer("gpt2")
    torch.manual_seed(0)
    module = NanoGPTModule(n_layer=1, n_head=2, n_embd=16, block_size=32, vocab_size=tok.get_vocab_size())
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": {**dict(module.hparams), **hp}, "global_step": 7}
    if tokenizer_json:
        ckpt["mixalign"] = {"tokenizer_json": tok.to_str()}
    torch.save(ckpt, path)
    return module, tok


def test_load_model_from_checkpoint(tmp_path):
    module, tok = make_checkpoint(tmp_path / "m.ckpt")
    lm = load_model(tmp_path / "m.ckpt")
    assert "m.ckpt" in lm.description and lm.context == 32
    texts = ["Checkpoints are scored like live models.", "x" * 300]
    expected = model_from_gpt(module.model.eval(), tok, "live").score(texts, max_batch_tokens=512)
    got = lm.score(texts, max_batch_tokens=512)
    np.testing.assert_allclose(got.values, expected.values, atol=1e-6, rtol=0)
    assert lm.tokenizer_id == model_from_gpt(module.model, tok, "live").tokenizer_id


def test_load_model_errors(tmp_path):
    make_checkpoint(tmp_path / "good.ckpt")
    data = (tmp_path / "good.ckpt").read_bytes()
    (tmp_path / "trunc.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"trunc\.ckpt.*truncated or corrupt"):
        load_model(tmp_path / "trunc.ckpt")
    make_checkpoint(tmp_path / "other.ckpt", n_embd=32)
    with pytest.raises(ValueError, match=r"other\.ckpt.*another architecture.*model\.wte\.weight.*\(50257, 16\).*\(50257, 32\)"):
        load_model(tmp_path / "other.ckpt")
    make_checkpoint(tmp_path / "deep.ckpt", n_layer=2)
    with pytest.raises(ValueError, match=r"deep\.ckpt.*missing keys.*blocks\.1"):
        load_model(tmp_path / "deep.ckpt")
    make_checkpoint(tmp_path / "notok.ckpt", tokenizer_json=False)
    with pytest.raises(ValueError, match=r"notok\.ckpt.*no tokenizer stored"):
        load_model(tmp_path / "notok.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "nohp.ckpt")
    with pytest.raises(ValueError, match=r"nohp\.ckpt.*hyper-parameters"):
        load_model(tmp_path / "nohp.ckpt")
    with pytest.raises(ValueError, match=r"missing\.ckpt.*\.ckpt.*config\.json"):
        load_model(tmp_path / "missing.ckpt")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(ValueError, match="emptydir.*config.json"):
        load_model(tmp_path / "emptydir")


# ---------------------------------------------------------------- Hugging Face


def hf_to_gpt(hf_model, block_size: int) -> GPT:
    """HF GPT-2 weights in our GPT, through the product's mapping (tests/test_hf_gpt2.py checks it)."""
    c = hf_model.config
    config = GPTConfig(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, block_size=block_size, vocab_size=c.vocab_size)
    gpt = GPT(config)
    gpt.load_state_dict(our_state_dict(hf_model.state_dict(), config))
    return gpt.eval()


def test_hugging_face_directory_matches_our_gpt(tmp_path):
    transformers = pytest.importorskip("transformers")
    from tokenizers import processors

    from mixalign.assets import asset_path

    tok_file = str(asset_path("tokenizers", "gpt2", "tokenizer.json"))
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=50257, n_positions=32, n_embd=32, n_layer=2, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, activation_function="gelu_new",
    )
    hf_model = transformers.GPT2LMHeadModel(config).eval()
    hf_tok = transformers.PreTrainedTokenizerFast(
        tokenizer_file=tok_file, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    hf_model.save_pretrained(tmp_path / "hf")
    hf_tok.save_pretrained(tmp_path / "hf")

    lm = load_model(tmp_path / "hf")
    assert lm.context == 32 and lm.bos_id is None  # GPT-2 adds no BOS
    texts = ["A short text.", "A longer text that needs sliding windows to be scored. " * 6]
    got = lm.score(texts, max_batch_tokens=256)
    ours = model_from_gpt(hf_to_gpt(hf_model, 32), load_tokenizer("gpt2"), "ours").score(texts, max_batch_tokens=256)
    assert got.n_windowed == 1 and got.tokens_per_text.tolist() == ours.tokens_per_text.tolist()
    np.testing.assert_allclose(got.values, ours.values, atol=1e-4, rtol=0)

    # A tokenizer that prepends BOS by itself: every real token is scored, the BOS is not.
    bos_tok = load_tokenizer("gpt2")
    bos_tok.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 50256)]
    )
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=bos_tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    ).save_pretrained(tmp_path / "hf")
    lm = load_model(tmp_path / "hf")
    assert lm.bos_id == 50256
    got_bos = lm.score(texts, max_batch_tokens=256)
    assert got_bos.tokens_per_text.tolist() == [len(i) for i in lm.encode_batch(texts)]
    ids = lm.encode_batch(texts[:1])[0]
    assert got_bos.values[0] == pytest.approx(forward_logprob_sum(hf_to_gpt(hf_model, 32), [50256] + ids), abs=1e-4)
