"""A test callback: the process sends itself SIGTERM after a given optimizer step, as a cluster scheduler would."""

import os
import signal

import lightning as L


class SigtermAt(L.Callback):
    def __init__(self, step: int = 7):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)
