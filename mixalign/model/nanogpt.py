"""A GPT-2 language model and the knowledge-distillation loss, in one file.

The whole model is meant to be read top to bottom: config, the key/value cache that
sampling uses, attention, MLP, block, GPT, then the arithmetic on logits: the targets'
log-probabilities (training loss and scoring) and the distillation loss used when
training toward a teacher.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mixalign.errors import MixalignError

IGNORE_INDEX = -100  # same convention as F.cross_entropy, so padding masks compose


@dataclass
class GPTConfig:
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    vocab_size: int
    bias: bool = True  # biases in Linear and LayerNorm, as in GPT-2
    dropout: float = 0.0

    def __post_init__(self):
        for name in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise MixalignError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise MixalignError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise MixalignError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")


class KVCache:
    """Keys and values of every position seen so far, one (k, v) pair per layer.

    Sampling feeds one new token at a time; with the cache each step costs one position's
    work instead of re-running the whole prefix.
    """

    def __init__(self, n_layer: int):
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layer

    @property
    def length(self) -> int:
        first = self.layers[0]
        return 0 if first is None else first[0].shape[2]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_dim): attention runs per head.
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        causal = True
        if cache is not None:
            past = cache.layers[layer]
            if past is not None:
                if T != 1:
                    raise ValueError("with a filled KVCache, feed one token at a time")
                k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
                causal = False  # the one new query may see every cached position
            cache.layers[layer] = (k, v)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=causal
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's GELU, so GPT-2 weights behave the same
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(self.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm residual block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Tied input/output embeddings (GPT-2): one matrix, fewer parameters.
        self.lm_head.weight = self.wte.weight

        self.apply(self._init_weights)
        # Each block adds two residual outputs; scaling them by 1/sqrt(2 n_layer)
        # keeps the residual stream's variance from growing with depth (GPT-2).
        resid_std = 0.02 / math.sqrt(2 * config.n_layer)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, mean=0.0, std=resid_std)
            nn.init.normal_(block.mlp.proj.weight, mean=0.0, std=resid_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        # nn.LayerNorm already starts at weight 1, bias 0.

    def hidden_states(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Final-LayerNorm activations of shape (B, T, n_embd): what the LM head reads.

        With a `cache`, idx continues the sequences the cache has seen (positions follow on).
        """
        B, T = idx.shape
        offset = cache.length if cache is not None else 0
        if offset + T > self.config.block_size:
            raise ValueError(
                f"sequence length {offset + T} exceeds block_size {self.config.block_size}"
            )
        pos = torch.arange(offset, offset + T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits of shape (B, T, vocab_size) for token ids idx of shape (B, T)."""
        return self.lm_head(self.hidden_states(idx))

    def token_logprobs(
        self, idx: torch.Tensor, targets: torch.Tensor, rows_per_chunk: int | None = None
    ) -> torch.Tensor:
        """log p(targets[b, t] | idx[b, :t+1]) of shape (B, T), float32.

        Positions whose target is IGNORE_INDEX (-100) get 0.0, so sums skip padding.
        rows_per_chunk=None is the training path: every position through the LM head at
        once, static shapes for torch.compile. A number is the scoring path: only positions
        with a target go through the head, that many at a time, so the context-only
        positions of sliding windows and the padding cost no head matmul, and each chunk's
        logits stay in the CPU's cache (BENCHMARKS.md, scoring).
        """
        if rows_per_chunk is None:
            return target_logprobs(self(idx), targets)  # self(): the compiled forward, if compiled
        hidden = self.hidden_states(idx)
        keep = targets != IGNORE_INDEX
        rows, row_targets = hidden[keep], targets[keep]
        picked = [
            target_logprobs(self.lm_head(rows[s : s + rows_per_chunk]), row_targets[s : s + rows_per_chunk])
            for s in range(0, rows.shape[0], rows_per_chunk)
        ]
        out = torch.zeros(targets.shape, dtype=torch.float32, device=targets.device)
        return out.masked_scatter(keep, torch.cat(picked)) if picked else out

    def next_token_logprobs(self, idx: torch.Tensor, keep: torch.Tensor, rows_per_chunk: int = 256) -> torch.Tensor:
        """Full next-token log-distributions (float32) at the positions where `keep` is True.

        Shape (number of kept positions, vocab_size), rows in row-major order of `keep`: what
        exact KL between two models compares. The head runs on kept rows only, in chunks.
        """
        rows = self.hidden_states(idx)[keep]
        chunks = [
            F.log_softmax(self.lm_head(rows[s : s + rows_per_chunk]).float(), dim=-1)
            for s in range(0, rows.shape[0], rows_per_chunk)
        ]
        return torch.cat(chunks) if chunks else rows.new_zeros((0, self.config.vocab_size), dtype=torch.float32)

    def decode_step(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Next-token log-distribution (B, vocab_size), float32, after feeding `idx` into `cache`."""
        return F.log_softmax(self.lm_head(self.hidden_states(idx, cache)[:, -1]).float(), dim=-1)

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Parameter count; non_embedding drops the position table.

        The token table stays in: it is tied to the LM head, whose matmul is real compute.
        """
        n = sum(p.numel() for p in self.parameters())  # parameters() counts the tied matrix once
        if non_embedding:
            n -= self.wpe.weight.numel()
        return n

    def estimate_flops_per_token(self) -> int:
        """Training FLOPs (forward + backward) per token at full context, for MFU.

        6N for the parameter matmuls (2 forward + 4 backward per multiply-add; PaLM,
        appendix B) plus 12 * n_layer * n_embd * block_size for attention scores and
        the weighted sum over values. The causal mask is ignored, as in PaLM's count.
        """
        c = self.config
        return 6 * self.num_parameters() + 12 * c.n_layer * c.n_embd * c.block_size


def state_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Each `GPT(config).state_dict()` entry's shape, computed on the meta device: a file's hyper-parameters
    are checked against its tensors before anything of their size is allocated."""
    with torch.device("meta"):
        return {key: tuple(value.shape) for key, value in GPT(config).state_dict().items()}


def target_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits)[..., target], 0.0 where target == IGNORE_INDEX.

    The softmax runs in float32 even under bf16 autocast: log-likelihoods are summed and
    compared downstream, and bf16 rounding would swamp the differences.
    """
    logprobs = F.log_softmax(logits.float(), dim=-1)
    ignore = targets == IGNORE_INDEX
    picked = logprobs.gather(-1, targets.masked_fill(ignore, 0).unsqueeze(-1)).squeeze(-1)
    return picked.masked_fill(ignore, 0.0)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """(1 - alpha) * CE(student, targets) + alpha * T^2 * KL(teacher_T || student_T).

    Logits are (..., vocab) and targets (...). Both terms are means over the tokens
    whose target is not IGNORE_INDEX, computed in float32. The T^2 factor keeps the
    soft-target gradients on the same scale as the hard ones (Hinton et al., 2015).
    The teacher is detached: it is a fixed target, never trained through this loss.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape"
        )
    if student_logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"targets {tuple(targets.shape)} do not match logits {tuple(student_logits.shape)}"
        )
    vocab = student_logits.shape[-1]
    student = student_logits.float().reshape(-1, vocab)
    teacher = teacher_logits.detach().float().reshape(-1, vocab)
    targets = targets.reshape(-1)
    keep = targets != IGNORE_INDEX
    n_tokens = keep.sum().clamp(min=1)  # all-ignored batch gives 0, not NaN

    ce = F.cross_entropy(student, targets, ignore_index=IGNORE_INDEX, reduction="sum") / n_tokens
    log_s = F.log_softmax(student / temperature, dim=-1)
    log_t = F.log_softmax(teacher / temperature, dim=-1)
    kl_per_token = F.kl_div(log_s, log_t, log_target=True, reduction="none").sum(-1)
    kl = kl_per_token.masked_fill(~keep, 0.0).sum() / n_tokens
    return (1.0 - alpha) * ce + alpha * temperature**2 * kl
