"""`SaveOnInterrupt`: a cluster scheduler's SIGTERM, or Ctrl-C, ends `fit` with a resumable `last.ckpt`.

Lightning catches SIGTERM itself and stops at the end of the current batch with a
`SIGTERMException` (Ctrl-C: a `KeyboardInterrupt`), calling every callback's `on_exception`; this one
saves the checkpoint there, where `--ckpt_path last` looks for it, and says so.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException


class SaveOnInterrupt(L.Callback):
    """On SIGTERM or Ctrl-C, save `<checkpoint dir>/last.ckpt` (the run's ModelCheckpoint's directory)."""

    def __init__(self):
        self.saved: Path | None = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        checkpoint = trainer.checkpoint_callback
        if not isinstance(exception, (SIGTERMException, KeyboardInterrupt)) or not isinstance(checkpoint, ModelCheckpoint):
            return
        if checkpoint.dirpath is None:
            return  # no checkpoint directory was set up (the run had not started)
        self.saved = Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
        checkpoint.last_model_path = str(self.saved)  # its own last.ckpt: the resumed run overwrites it, not -v1
        trainer.save_checkpoint(self.saved)
        what = "SIGTERM" if isinstance(exception, SIGTERMException) else "interrupted (Ctrl-C)"
        rank_zero_info(f"mixalign: {what} at step {trainer.global_step}: saved {self.saved}; resume with the same "
                       "command and --ckpt_path last")
