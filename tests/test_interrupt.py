"""`SaveOnInterrupt` in-process: Ctrl-C (a KeyboardInterrupt) saves last.ckpt where `--ckpt_path last` looks and
says how to resume; any other exception saves nothing. (A SIGTERM end to end: tests/test_cli.py.)"""

import logging
from types import SimpleNamespace

from lightning.pytorch.callbacks import ModelCheckpoint

from mixalign.callbacks.interrupt import SaveOnInterrupt


def trainer_at(step: int, folder):
    saved = []
    checkpoint = ModelCheckpoint(dirpath=folder)
    return SimpleNamespace(checkpoint_callback=checkpoint, global_step=step, save_checkpoint=saved.append), saved


def test_ctrl_c_saves_last_ckpt_and_says_how_to_resume(tmp_path, caplog):
    trainer, saved = trainer_at(7, tmp_path)
    with caplog.at_level(logging.INFO):
        SaveOnInterrupt().on_exception(trainer, None, KeyboardInterrupt())
    assert saved == [tmp_path / "last.ckpt"] and trainer.checkpoint_callback.last_model_path == str(tmp_path / "last.ckpt")
    assert any("interrupted (Ctrl-C) at step 7" in r.getMessage() and "--ckpt_path last" in r.getMessage()
               for r in caplog.records)


def test_a_bug_saves_nothing(tmp_path):
    trainer, saved = trainer_at(7, tmp_path)
    SaveOnInterrupt().on_exception(trainer, None, RuntimeError("a bug"))
    assert saved == []
