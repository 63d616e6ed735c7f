import io
import math

import pytest
import torch
import torch.nn.functional as F

from mixalign.model import GPT, GPTConfig, distillation_loss


def tiny_config(**overrides) -> GPTConfig:
    kwargs = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50)
    kwargs.update(overrides)
    return GPTConfig(**kwargs)


def tiny_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(tiny_config(**overrides)).eval()


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    "field, value",
    [("n_layer", 0), ("n_head", -1), ("n_embd", 2.5), ("block_size", 0), ("vocab_size", True)],
)
def test_config_rejects_non_positive_ints(field, value):
    with pytest.raises(ValueError, match=rf"{field}.*{value!r}"):
        tiny_config(**{field: value})


def test_config_rejects_indivisible_heads_and_bad_dropout():
    with pytest.raises(ValueError, match=r"n_embd \(30\).*n_head \(4\)"):
        tiny_config(n_embd=30, n_head=4)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match=rf"dropout.*{bad}"):
            tiny_config(dropout=bad)


# ---------------------------------------------------------------- forward


def test_forward_shape_and_too_long_sequence():
    model = tiny_model()
    assert model(torch.zeros(3, 16, dtype=torch.long)).shape == (3, 16, 50)
    with pytest.raises(ValueError, match=r"17.*16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_causality():
    model = tiny_model()
    T = 12
    idx = torch.randint(0, 50, (2, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = model(idx)
        for j in (0, 5, T - 1):
            changed = idx.clone()
            changed[:, j] = (changed[:, j] + 1) % 50
            out = model(changed)
            torch.testing.assert_close(out[:, :j], base[:, :j], rtol=0, atol=1e-6)
            assert (out[:, j:] - base[:, j:]).abs().amax() > 1e-4
            # every later position sees the change
            assert ((out[:, j:] - base[:, j:]).abs().amax(dim=-1) > 1e-6).all()


# ---------------------------------------------------------------- weights


def test_weight_tying_survives_state_dict_round_trip():
    model = tiny_model(seed=0)
    assert model.lm_head.weight is model.wte.weight

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    other = tiny_model(seed=1)
    other.load_state_dict(torch.load(buffer))

    assert other.lm_head.weight is other.wte.weight
    assert other.lm_head.weight.data_ptr() == other.wte.weight.data_ptr()
    torch.testing.assert_close(other.wte.weight, model.wte.weight)
    idx = torch.randint(0, 50, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(other(idx), model(idx))
    # Updating one updates the other: they are one tensor.
    with torch.no_grad():
        other.wte.weight[0, 0] = 123.0
    assert other.lm_head.weight[0, 0].item() == 123.0


def test_init_standard_deviations():
    torch.manual_seed(0)
    n_layer = 4
    model = GPT(GPTConfig(n_layer=n_layer, n_head=4, n_embd=256, block_size=256, vocab_size=1024))
    resid_std = 0.02 / math.sqrt(2 * n_layer)

    def close(t, expected):
        assert abs(t.std().item() - expected) / expected < 0.03, (t.std().item(), expected)

    close(model.wte.weight, 0.02)
    close(model.wpe.weight, 0.02)
    for block in model.blocks:
        close(block.attn.qkv.weight, 0.02)
        close(block.mlp.fc.weight, 0.02)
        close(block.attn.proj.weight, resid_std)
        close(block.mlp.proj.weight, resid_std)
        for linear in (block.attn.qkv, block.attn.proj, block.mlp.fc, block.mlp.proj):
            assert abs(linear.weight.mean().item()) < 1e-3
            assert torch.count_nonzero(linear.bias) == 0
        for ln in (block.ln_1, block.ln_2):
            assert torch.equal(ln.weight, torch.ones_like(ln.weight))
            assert torch.count_nonzero(ln.bias) == 0
    assert torch.equal(model.ln_f.weight, torch.ones_like(model.ln_f.weight))


def test_no_bias_config_has_no_biases():
    model = tiny_model(bias=False)
    assert all(not name.endswith("bias") for name, _ in model.named_parameters())


def test_num_parameters_and_flops():
    L, d, T, V = 2, 32, 16, 50
    model = tiny_model()
    per_block = 12 * d * d + 13 * d  # qkv, out-proj, MLP weights and biases, two LayerNorms
    total = V * d + T * d + L * per_block + 2 * d  # tied head counted once; final LayerNorm
    assert model.num_parameters(non_embedding=False) == total
    assert model.num_parameters() == total - T * d
    assert model.estimate_flops_per_token() == 6 * (total - T * d) + 12 * L * d * T


# ---------------------------------------------------------------- training


def test_tiny_model_overfits_short_text():
    text = "the quick brown fox jumps over the lazy dog"
    chars = sorted(set(text))
    ids = torch.tensor([[chars.index(c) for c in text]])
    x, y = ids[:, :-1], ids[:, 1:]
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=len(chars)))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)

    for step in range(200):  # converges in ~35 steps
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        if loss.item() < 0.1:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert loss.item() < 0.1, f"loss {loss.item():.3f} after {step} steps"


# ---------------------------------------------------------------- token_logprobs


def test_token_logprobs_is_negative_cross_entropy_and_ignores_padding():
    model = tiny_model()
    gen = torch.Generator().manual_seed(2)
    idx = torch.randint(0, 50, (3, 10), generator=gen)
    targets = torch.randint(0, 50, (3, 10), generator=gen)
    with torch.no_grad():
        logits = model(idx)
        expected = -F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
        lp = model.token_logprobs(idx, targets)
    assert lp.shape == (3, 10) and lp.dtype == torch.float32
    torch.testing.assert_close(lp, expected.view(3, 10))

    masked = targets.clone()
    masked[0, 7:] = -100
    masked[2, :2] = -100
    with torch.no_grad():
        lp_masked = model.token_logprobs(idx, masked)
    ignore = masked == -100
    assert torch.equal(lp_masked[ignore], torch.zeros(int(ignore.sum())))
    torch.testing.assert_close(lp_masked[~ignore], lp[~ignore])


@pytest.mark.parametrize("rows_per_chunk", [1, 3, 7, 1000])
def test_token_logprobs_scoring_path_equals_training_path(rows_per_chunk):
    """The scoring path (head only on scored rows, in chunks) gives the training path's values."""
    model = tiny_model()
    gen = torch.Generator().manual_seed(3)
    idx = torch.randint(0, 50, (3, 10), generator=gen)
    targets = torch.randint(0, 50, (3, 10), generator=gen)
    targets[0, :6] = -100  # a window's context-only prefix
    targets[2, 4:] = -100  # right padding
    with torch.no_grad():
        full = model.token_logprobs(idx, targets)
        chunked = model.token_logprobs(idx, targets, rows_per_chunk=rows_per_chunk)
        nothing = model.token_logprobs(idx, torch.full_like(targets, -100), rows_per_chunk=rows_per_chunk)
    assert chunked.shape == (3, 10) and chunked.dtype == torch.float32
    torch.testing.assert_close(chunked, full, rtol=0, atol=1e-5)
    assert torch.equal(chunked[targets == -100], torch.zeros(int((targets == -100).sum())))
    assert torch.equal(nothing, torch.zeros(3, 10))


def test_token_logprobs_float32_under_bf16_autocast():
    model = tiny_model()
    idx = torch.randint(0, 50, (2, 8))
    targets = torch.randint(0, 50, (2, 8))
    with torch.no_grad():
        reference = model.token_logprobs(idx, targets)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lp = model.token_logprobs(idx, targets)
    assert lp.dtype == torch.float32
    torch.testing.assert_close(lp, reference, rtol=0, atol=0.05)


# ---------------------------------------------------------------- distillation


def _softmax(xs, t=1.0):
    exps = [math.exp(x / t) for x in xs]
    return [e / sum(exps) for e in exps]


def test_distillation_loss_matches_hand_computation():
    student = [[1.0, 2.0, 0.0], [0.0, 0.0, 3.0], [5.0, -5.0, 0.0]]
    teacher = [[2.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 9.0, 0.0]]
    targets = [1, 0, -100]  # third row is padding and must not count
    alpha, T = 0.25, 2.0

    ce = kl = 0.0
    for s, t, y in zip(student[:2], teacher[:2], targets[:2]):
        ce += -math.log(_softmax(s)[y])
        p_t, p_s = _softmax(t, T), _softmax(s, T)
        kl += sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    expected = (1 - alpha) * ce / 2 + alpha * T**2 * kl / 2

    loss = distillation_loss(
        torch.tensor([student]), torch.tensor([teacher]), torch.tensor([targets]), alpha, T
    )
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_distillation_loss_limits():
    gen = torch.Generator().manual_seed(3)
    student = torch.randn(2, 5, 7, generator=gen)
    teacher = torch.randn(2, 5, 7, generator=gen)
    targets = torch.randint(0, 7, (2, 5), generator=gen)
    targets[1, 3:] = -100
    ce = F.cross_entropy(student.flatten(0, 1), targets.flatten(), ignore_index=-100)

    # alpha = 0: plain cross-entropy, whatever the teacher says.
    assert distillation_loss(student, teacher, targets, 0.0, 2.0).item() == ce.item()
    # student == teacher: the KL term vanishes, leaving the scaled CE.
    same = distillation_loss(student, student.clone(), targets, 0.4, 3.0)
    assert same.item() == pytest.approx(0.6 * ce.item(), abs=1e-6)
    assert distillation_loss(student, student.clone(), targets, 1.0, 3.0).abs().item() < 1e-6


def test_distillation_loss_grads_flow_to_student_only_and_bf16_inputs():
    student = torch.randn(4, 6, requires_grad=True)
    teacher = torch.randn(4, 6, requires_grad=True)
    targets = torch.tensor([0, 5, -100, 2])
    distillation_loss(student, teacher, targets, 0.5, 2.0).backward()
    assert student.grad is not None and student.grad[2].abs().sum() == 0  # padding row
    assert teacher.grad is None
    loss = distillation_loss(student.bfloat16(), teacher.bfloat16(), targets, 0.5, 2.0)
    assert loss.dtype == torch.float32


@pytest.mark.parametrize("alpha, temperature", [(-0.1, 1.0), (1.5, 1.0), (0.5, 0.0), (0.5, -2.0)])
def test_distillation_loss_validates_arguments(alpha, temperature):
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="alpha" if not 0 <= alpha <= 1 else "temperature"):
        distillation_loss(logits, logits, torch.tensor([0, 1]), alpha, temperature)


def test_default_precision_is_bf16_mixed_only_on_a_bf16_gpu(monkeypatch):
    from mixalign.cli import default_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_precision("auto") == default_precision("cpu") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert default_precision("auto") == default_precision("gpu") == "bf16-mixed"
    assert default_precision("cpu") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert default_precision("gpu") == "32-true"
