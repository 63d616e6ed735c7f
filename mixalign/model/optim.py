"""The optimizer every training loop here uses: AdamW over decayed and plain parameter groups, with a
linear warm-up and cosine decay. The main run (`NanoGPTModule`), the probes and the benchmarks build it
from here, so a probe trains exactly as the main run does."""

from __future__ import annotations

import math

import torch


def lr_at(step: int, max_lr: float, min_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """Linear warmup to `max_lr`, then cosine decay to `min_lr` at `decay_steps`, flat after."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices and embeddings (2+ dims) only; never on biases and LayerNorm gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def adamw(model: torch.nn.Module, learning_rate: float, weight_decay: float, betas, fused: bool | None = None):
    """AdamW over `param_groups`; fused where asked (default: on CUDA parameters)."""
    if fused is None:
        fused = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=learning_rate, betas=tuple(betas),
                             fused=fused or None)
