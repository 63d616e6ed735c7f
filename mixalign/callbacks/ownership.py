"""`OwnCheckpointDir`: one run writes a checkpoint directory at a time.

Two `fit` runs given the same `checkpoint.dirpath` would take each other's `last.ckpt` (and one
could delete the other's final checkpoint). The first run writes a lock file there naming its host
and process; a second run stops at once with one line naming that run. A lock left by a process
that is gone (on this host) is taken over.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import lightning as L

from mixalign.errors import MixalignError

LOCK = ".mixalign-run.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def claim(folder: Path) -> Path:
    """Take `folder` for this process (a lock file, created exclusively); an error naming the run that holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    lock, me = folder / LOCK, f"{socket.gethostname()} {os.getpid()}"
    while True:
        try:
            with open(lock, "x") as handle:
                handle.write(me)
            return lock
        except FileExistsError:
            host, _, pid = lock.read_text().partition(" ")
            mine_or_gone = f"{host} {pid}" == me or (host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)))
            if mine_or_gone:
                lock.unlink(missing_ok=True)  # its run is gone: take it over
                continue
            raise MixalignError(f"checkpoint.dirpath {folder}: another run is writing it (process {pid} on {host}); "
                                "give this run its own --checkpoint.dirpath") from None


class OwnCheckpointDir(L.Callback):
    """Hold the run's checkpoint directory (see the module docstring) from the start of fit to its end."""

    def __init__(self):
        self.lock: Path | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        checkpoint = trainer.checkpoint_callback
        if trainer.is_global_zero and checkpoint is not None and getattr(checkpoint, "dirpath", None):
            self.lock = claim(Path(checkpoint.dirpath))

    def _release(self) -> None:
        if self.lock is not None:
            self.lock.unlink(missing_ok=True)
            self.lock = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._release()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._release()
