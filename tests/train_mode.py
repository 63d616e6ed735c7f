"""A callback for end-to-end tests: the fit fails at the first step taken with a module in eval mode."""

from __future__ import annotations

import lightning as L


class AssertTrainMode(L.Callback):
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx) -> None:
        if in_eval := [name for name, module in pl_module.named_modules() if not module.training]:
            raise AssertionError(f"step {trainer.global_step}: {len(in_eval)} module(s) in eval mode: {in_eval[:3]}")
