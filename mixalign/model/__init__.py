"""The GPT-2 language model and the knowledge-distillation loss."""

from mixalign.model.nanogpt import GPT, GPTConfig, distillation_loss

__all__ = ["GPT", "GPTConfig", "distillation_loss"]
