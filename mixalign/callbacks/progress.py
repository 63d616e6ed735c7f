"""Training progress in optimizer steps out of `trainer.max_steps`: `StepProgressBar` in a terminal,
`PlainProgress` (plain lines) in a log file or a pipe.

mixalign's training stream is endless, so Lightning's epoch bar reads "Epoch 0/-2"; this one
counts steps (from the resumed step after `--ckpt_path`) and leaves out the logger's version.
"""

from __future__ import annotations

import time

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, counting optimizer steps of max_steps (refresh_rate: every that many steps)."""

    def on_train_epoch_start(self, trainer: L.Trainer, *_) -> None:
        super().on_train_epoch_start(trainer)
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps if trainer.max_steps > 0 else None)
        bar.initial = bar.n = trainer.global_step
        bar.set_description("steps")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        bar, step = self.train_progress_bar, trainer.global_step
        if bar is not None and not bar.disable and (step % max(1, self.refresh_rate) == 0 or step == bar.total):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # set_postfix redraws

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


class PlainProgress(ProgressBar):
    """Progress for a log file or a pipe: one plain line every `every` optimizer steps (and the last),
    with the progress-bar metrics, tokens per second and the time left, and one after each validation.
    No carriage returns or escape codes, so a redirected run reads line by line."""

    def __init__(self, every: int = 50):
        super().__init__()
        self.every = max(1, every)
        self.enabled = True
        self.started: tuple[float, int] | None = None

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = (time.perf_counter(), trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.enabled and (step % self.every == 0 or step == trainer.max_steps):
            self.print(f"step {step}/{trainer.max_steps}: {self._metrics(trainer, pl_module)}{self._left(step, trainer)}")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.enabled and not trainer.sanity_checking:
            shown = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/") and k.count("/") == 1}
            self.print(f"step {trainer.global_step} validation: " + ", ".join(f"{k} {float(v):.4f}" for k, v in shown.items()))

    def _metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str:
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        speed = trainer.callback_metrics.get("train/tokens_per_sec")
        shown = [f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()]
        return ", ".join(shown + ([f"{float(speed):,.0f} tokens/s"] if speed is not None else []))

    def _left(self, step: int, trainer: L.Trainer) -> str:
        if self.started is None or step <= self.started[1] or trainer.max_steps <= step:
            return ""
        rate = (time.perf_counter() - self.started[0]) / (step - self.started[1])
        return f", about {rate * (trainer.max_steps - step):.0f} s left"
