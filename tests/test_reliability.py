"""Interrupted runs, numeric faults, atomic files and concurrency: an interruption costs nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, mixalign, scalars, tiny

from mixalign.data.prepare import _is_valid
from mixalign.io import atomic_checkpoint_io, atomic_path
from mixalign.model.checkpoint import gpt_from_checkpoint, read_checkpoint


def start(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-m", "mixalign", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill_when(process: subprocess.Popen, ready, polls: int = 12_000) -> None:
    """SIGKILL `process` as soon as `ready()` holds (it must still be running then)."""
    for _ in range(polls):  # every 50 ms, up to about 10 minutes
        if ready():
            break
        assert process.poll() is None, f"finished before it could be killed: {process.stderr.read()[-2000:]}"
        time.sleep(0.05)
    else:
        pytest.fail("the process never reached the point where it was to be killed")
    process.send_signal(signal.SIGKILL)
    process.wait()


# -- atomic files ----------------------------------------------------------------------------------
def test_atomic_path_leaves_old_file_whole_on_failure(tmp_path):
    target = tmp_path / "weights.yaml"
    target.write_text("old: 1\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("new: half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old: 1\n" and [p.name for p in tmp_path.iterdir()] == ["weights.yaml"]


def test_checkpoint_writes_are_atomic(tmp_path):
    path = tmp_path / "last.ckpt"
    io = atomic_checkpoint_io()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)
    with pytest.raises(Exception):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "unpicklable": lambda: None}, path)
    assert torch.equal(torch.load(path)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


# -- numeric faults --------------------------------------------------------------------------------
@pytest.mark.slow
def test_nan_loss_stops_with_the_step_and_the_last_checkpoint_loads(tmp_path, demo_cache):
    result = mixalign("fit", *tiny("--model.learning_rate", "1e6", "--model.warmup_steps", "1",
                                   "--trainer.max_steps", "50", "--checkpoint.every_n_train_steps", "1",
                                   "--checkpoint.dirpath", "ckpt", cache=demo_cache), cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "training stopped: the loss is nan at step 1" in result.stderr
    model, checkpoint = gpt_from_checkpoint(tmp_path / "ckpt" / "last.ckpt")
    assert checkpoint["global_step"] == 1 and all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.slow
def test_nan_loss_between_checkpoints_stops_at_the_next_logging_interval_and_saves_nothing(tmp_path, demo_cache):
    """The guard never syncs a step: it reads the first non-finite loss at logging intervals."""
    result = mixalign("fit", *tiny("--model.learning_rate", "1e6", "--model.warmup_steps", "1",
                                   "--trainer.max_steps", "50", "--trainer.log_every_n_steps", "10",
                                   "--checkpoint.every_n_train_steps", "1000", "--checkpoint.dirpath", "ckpt",
                                   cache=demo_cache), cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "training stopped: the loss is nan at step 1;" in result.stderr
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").iterdir())


# -- interrupted runs ------------------------------------------------------------------------------
@pytest.mark.slow
def test_fit_killed_then_resumed_from_last_matches_an_uninterrupted_run(tmp_path, demo_cache):
    common = ("--trainer.max_steps", "200", "--trainer.val_check_interval", "50",
              "--checkpoint.every_n_train_steps", "10")
    mixalign("fit", *tiny(*common, "--trainer.default_root_dir", "straight", "--checkpoint.dirpath", "straight/ckpt",
                          cache=demo_cache), cwd=tmp_path)
    args = tiny(*common, "--trainer.default_root_dir", "killed", "--checkpoint.dirpath", "killed/ckpt", cache=demo_cache)
    last = tmp_path / "killed" / "ckpt" / "last.ckpt"

    def mid_run() -> bool:
        try:
            return 30 <= read_checkpoint(last)["global_step"] < 200
        except ValueError:  # not written yet
            return False

    kill_when(start("fit", *args, cwd=tmp_path), mid_run)
    killed_at = read_checkpoint(last)["global_step"]
    mixalign("fit", *args, "--ckpt_path", "last", cwd=tmp_path)

    straight = read_checkpoint(tmp_path / "straight" / "ckpt" / "last.ckpt")
    resumed = read_checkpoint(last)
    assert resumed["global_step"] == 200
    for name, value in straight["state_dict"].items():
        assert torch.allclose(value, resumed["state_dict"][name], atol=1e-6, rtol=0), name
    losses = dict(scalars(tmp_path / "straight" / "lightning_logs" / "version_0")["train/loss"])
    after = dict(scalars(tmp_path / "killed" / "lightning_logs" / "version_1")["train/loss"])
    assert min(after) >= killed_at and len(after) >= 10
    for step, value in after.items():
        assert value == pytest.approx(losses[step], abs=1e-6)


@pytest.mark.slow
def test_weights_killed_between_probes_reuses_them_and_gives_the_same_weights(tmp_path, demo_cache, tiny_target):
    def args(cache: str, out: str) -> list[str]:
        return ["weights", *tiny("--mixture.target", str(tiny_target), "--mixture.n_texts", "60",
                                 "--mixture.probe_steps", "10", "--mixture.cache_dir", cache, cache=demo_cache),
                "--out", out]

    mixalign(*args("straight", "straight.yaml"), cwd=tmp_path)
    probes = tmp_path / "killed"
    kill_when(start(*args("killed", "killed.yaml"), cwd=tmp_path),
              lambda: len([p for p in probes.glob("probe-*.npz")]) >= 3)
    done = len(list(probes.glob("probe-*.npz")))
    assert not (tmp_path / "killed.yaml").exists()
    rerun = mixalign(*args("killed", "killed.yaml"), cwd=tmp_path).stdout
    assert f"probes trained this time: {9 - done}" in rerun
    straight = yaml.safe_load((tmp_path / "straight.yaml").read_text())["weights"]
    resumed = yaml.safe_load((tmp_path / "killed.yaml").read_text())["weights"]
    assert resumed == pytest.approx(straight, abs=1e-9)


# -- concurrency -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_runs_in_one_log_dir_get_their_own_versions(tmp_path, demo_cache):
    mixalign("prepare", *tiny(cache=demo_cache), cwd=tmp_path)  # so both start training at once
    runs = [start("fit", *tiny("--trainer.max_steps", "20", "--seed_everything", str(seed), cache=demo_cache),
                  cwd=tmp_path) for seed in (1, 2)]
    assert [run.wait() for run in runs] == [0, 0]
    versions = sorted((tmp_path / "runs" / "tiny" / "lightning_logs").iterdir())
    assert [v.name for v in versions] == ["version_0", "version_1"]
    finals = [read_checkpoint(v / "checkpoints" / "last.ckpt") for v in versions]
    assert all(f["global_step"] == 20 for f in finals)
    assert not torch.equal(finals[0]["state_dict"]["model.wte.weight"], finals[1]["state_dict"]["model.wte.weight"])


@pytest.mark.slow
def test_two_preparers_at_once_end_with_one_valid_cache(tmp_path, corpus):
    args = ["prepare", *tiny("--data.source", str(corpus), "--data.tokenizer", "null", "--data.bpe_vocab_size", "300",
                             cache=tmp_path / "cache")]
    runs = [start(*args, cwd=tmp_path) for _ in range(2)]
    assert [run.wait() for run in runs] == [0, 0]
    entries = list((tmp_path / "cache").iterdir())
    assert len(entries) == 1 and _is_valid(entries[0], entries[0].name)
