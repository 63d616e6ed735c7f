"""End to end: `mixalign` subcommands in subprocesses on configs/tiny.yaml."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from helpers import DEMO_DOMAINS, REPO, mixalign, reported_metric, scalars, tiny

from mixalign.cli import MixalignCLI

pytestmark = pytest.mark.slow


def test_print_config_round_trips(tmp_path, demo_cache):
    printed = mixalign("fit", *tiny("--print_config", cache=demo_cache), cwd=tmp_path).stdout
    assert "block_size: 64" in printed and "save_last: true" in printed
    (tmp_path / "printed.yaml").write_text(printed)
    again = mixalign("fit", "--config", "printed.yaml", "--print_config", cwd=tmp_path).stdout
    assert again == printed


def test_fit_logs_then_validate_reproduces_val_loss(tmp_path, demo_cache):
    fitted = mixalign("fit", *tiny(cache=demo_cache), cwd=tmp_path)
    # Not a terminal: plain lines (PlainProgress), no carriage returns or escape codes.
    assert "step 30/30: train/loss" in fitted.stdout and "validation: val/loss" in fitted.stdout
    assert "\r" not in fitted.stdout + fitted.stderr and "\x1b" not in fitted.stdout + fitted.stderr
    assert "Tip:" not in fitted.stderr and "LeafSpec" not in fitted.stderr  # quiet: nothing a user cannot act on
    run = tmp_path / "runs" / "tiny" / "lightning_logs" / "version_0"
    logged = scalars(run)
    for tag in ("train/loss", "train/lr", "train/tokens", "train/tokens_per_sec", "val/loss"):
        assert logged.get(tag), f"{tag} not logged"
    for domain in DEMO_DOMAINS:
        assert len(logged[f"val/loss/{domain}"]) == 3
        assert logged[f"train/frac/{domain}"]
    assert logged["train/loss"][-1][1] < logged["train/loss"][0][1]
    assert logged["train/tokens"][-1] == (29, 30 * 8 * 64)

    last = run / "checkpoints" / "last.ckpt"
    out = mixalign("validate", *tiny(f"--ckpt_path={last}", cache=demo_cache), cwd=tmp_path).stdout
    assert reported_metric(out, "val/loss") == pytest.approx(logged["val/loss"][-1][1], abs=1e-5)


def test_resume_continues_exactly(tmp_path, demo_cache):
    common = ("--model.lr_decay_steps", "20", "--trainer.val_check_interval", "10")
    mixalign("fit", *tiny("--trainer.max_steps", "20", "--trainer.default_root_dir", "straight", *common,
                          cache=demo_cache), cwd=tmp_path)
    bar = mixalign("fit", *tiny("--trainer.max_steps", "10", "--trainer.default_root_dir", "halves", *common,
                                "--trainer.callbacks+=mixalign.callbacks.StepProgressBar", cache=demo_cache), cwd=tmp_path)
    assert "steps: 100%" in bar.stdout and "10/10" in bar.stdout and "Epoch 0/-2" not in bar.stdout  # counts steps
    first_half = tmp_path / "halves" / "lightning_logs" / "version_0"
    # tiny.yaml sets no checkpoint.dirpath: `last` must find this run's last.ckpt under its version.
    mixalign("fit", *tiny("--trainer.max_steps", "20", "--trainer.default_root_dir", "halves", *common,
                          "--ckpt_path", "last", cache=demo_cache), cwd=tmp_path)

    straight = torch.load(tmp_path / "straight/lightning_logs/version_0/checkpoints/last.ckpt", weights_only=False)
    # The resumed run continues its own version directory: one run, one set of curves.
    assert not (tmp_path / "halves/lightning_logs/version_1").exists()
    resumed = torch.load(first_half / "checkpoints" / "last.ckpt", weights_only=False)
    assert straight["global_step"] == resumed["global_step"] == 20
    for name, value in straight["state_dict"].items():
        assert torch.allclose(value, resumed["state_dict"][name], atol=1e-6, rtol=0), name
    # Same data stream: the losses logged after the resume equal the uninterrupted run's.
    losses_straight = dict(scalars(tmp_path / "straight/lightning_logs/version_0")["train/loss"])
    logged = scalars(first_half)["train/loss"]
    losses_resumed = dict(logged)
    assert sorted(step for step, _ in logged) == [4, 9, 14, 19]  # each step once, across the resume
    for step, value in losses_resumed.items():
        assert value == pytest.approx(losses_straight[step], abs=1e-6)
    assert straight["mixalign"]["domain_token_counts"] == resumed["mixalign"]["domain_token_counts"]


def test_sigterm_saves_a_checkpoint_that_resumes_exactly(tmp_path, demo_cache):
    """A SIGTERM after step 7 (as a cluster scheduler sends) ends fit with exit 143, a last.ckpt and a line
    saying how to resume; resuming gives the uninterrupted run's weights to 1e-6."""
    import os

    common = ("--model.lr_decay_steps", "20", "--trainer.val_check_interval", "10", "--trainer.max_steps", "20")
    mixalign("fit", *tiny("--trainer.default_root_dir", "straight", *common, cache=demo_cache), cwd=tmp_path)
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    stopped = mixalign("fit", *tiny("--trainer.default_root_dir", "cut", *common,
                                    "--trainer.callbacks+=sigterm_at.SigtermAt", cache=demo_cache),
                       cwd=tmp_path, env=env, check=False)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "SIGTERM at step 7" in stopped.stdout + stopped.stderr and "--ckpt_path last" in stopped.stdout + stopped.stderr
    run = tmp_path / "cut" / "lightning_logs" / "version_0"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 7
    mixalign("fit", *tiny("--trainer.default_root_dir", "cut", *common, "--ckpt_path", "last", cache=demo_cache),
             cwd=tmp_path)
    straight = torch.load(tmp_path / "straight/lightning_logs/version_0/checkpoints/last.ckpt", weights_only=False)
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert straight["global_step"] == resumed["global_step"] == 20
    for name, value in straight["state_dict"].items():
        assert torch.allclose(value, resumed["state_dict"][name], atol=1e-6, rtol=0), name


def test_a_second_fit_on_a_checkpoint_directory_in_use_stops_in_one_line(tmp_path, demo_cache):
    """A live run's lock (this test's own process) stops a second fit before it writes anything; a lock
    left by a process that is gone is taken over, and a finished run leaves no lock."""
    import os
    import socket

    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / ".mixalign-run.lock").write_text(f"{socket.gethostname()} {os.getpid()}")
    args = tiny("--trainer.max_steps", "2", "--checkpoint.dirpath", str(folder), cache=demo_cache)
    second = mixalign("fit", *args, cwd=tmp_path, check=False)
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"checkpoint.dirpath {folder}: another run is writing it (process {os.getpid()}" in second.stderr
    assert not (folder / "last.ckpt").exists()
    (folder / ".mixalign-run.lock").write_text(f"{socket.gethostname()} 999999999")  # no such process
    mixalign("fit", *args, cwd=tmp_path)
    assert (folder / "last.ckpt").exists() and not (folder / ".mixalign-run.lock").exists()


def test_compiled_fused_training_matches_eager(tmp_path, demo_cache):
    """The GPU fast paths (torch.compile, fused AdamW, the unset-precision default) run on CPU too,
    train the same numbers, and leave checkpoints of the plain model."""
    common = ("--trainer.max_steps", "10", "--trainer.precision", "null")
    mixalign("fit", *tiny(*common, "--trainer.default_root_dir", "eager", cache=demo_cache), cwd=tmp_path)
    mixalign("fit", *tiny(*common, "--trainer.default_root_dir", "fast", "--model.compile", "true",
                          "--model.fused_adamw", "true", cache=demo_cache), cwd=tmp_path)
    eager, fast = (scalars(tmp_path / name / "lightning_logs" / "version_0") for name in ("eager", "fast"))
    for tag in ("train/loss", "val/loss"):
        assert [s for s, _ in fast[tag]] == [s for s, _ in eager[tag]]
        assert [v for _, v in fast[tag]] == pytest.approx([v for _, v in eager[tag]], abs=1e-4)
    checkpoint = torch.load(tmp_path / "fast/lightning_logs/version_0/checkpoints/last.ckpt", weights_only=False)
    assert checkpoint["hyper_parameters"]["compile"] is True
    assert not any("_orig_mod" in name for name in checkpoint["state_dict"])
    saved = (tmp_path / "fast/lightning_logs/version_0/config.yaml").read_text()
    assert "precision: 32-true" in saved  # resolved for a CPU run


def test_prepare_subcommand(tmp_path, demo_cache):
    out = mixalign("prepare", *tiny(cache=demo_cache), cwd=tmp_path).stdout
    assert "prepared data:" in out
    for domain in DEMO_DOMAINS:
        assert domain in out


def test_config_paths_resolve_from_the_config_file(tmp_path, monkeypatch, capsys):
    """A config's relative paths are read from its own directory, one typed on the command line
    from the current directory; what is saved from the config names absolute paths."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    for folder in (project / "configs", project / "models", elsewhere):
        folder.mkdir(parents=True)
    shutil.copy(REPO / "checkpoints" / "base.ckpt", project / "models" / "base.ckpt")
    shutil.copy(REPO / "checkpoints" / "target.npz", project / "models" / "target.npz")
    shutil.copy(REPO / "mixalign" / "assets" / "textsets" / "demo.jsonl.zst", elsewhere / "texts.jsonl.zst")
    config = yaml.safe_load((REPO / "configs" / "pile.yaml").read_text())
    config["model"]["init_from"] = "../models/base.ckpt"
    config["mixture"]["target"] = "../models/target.npz"
    (project / "configs" / "run.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(elsewhere)

    cli = MixalignCLI(args=["--config", "../project/configs/run.yaml", "--mixture.textset", "texts.jsonl.zst",
                            "--out", "w.yaml"], run=False, command="weights")
    mixture, kl = cli.config_init["mixture"], cli.config_init["kl"]
    assert Path(mixture.target).resolve() == Path(kl.target).resolve() == project / "models" / "target.npz"
    assert Path(mixture.textset).resolve() == elsewhere / "texts.jsonl.zst"  # typed here: from here
    assert isinstance(cli.model.hparams.init_from, str) and Path(cli.model.hparams.init_from).is_absolute()
    assert Path(cli.model.hparams.init_from).resolve() == project / "models" / "base.ckpt"
    saved = yaml.safe_load(cli.parser.dump(cli.config))  # the run's config.yaml is this dump
    assert Path(saved["model"]["init_from"]).is_absolute() and Path(saved["mixture"]["target"]).is_absolute()

    config["mixture"]["target"] = "models/target.npz"  # right from the project root, wrong from configs/
    (project / "configs" / "cwd.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(project)
    with pytest.raises(SystemExit):
        MixalignCLI(args=["--config", "configs/cwd.yaml", "--out", "w.yaml"], run=False, command="weights")
    err = capsys.readouterr().err  # one line naming the key and the file it looked for
    assert err.startswith("mixalign weights: error: mixture.target: ") and err.count("\n") == 1
    assert "File is not readable: '" in err and "configs/models/target.npz'" in err


def test_a_printed_config_runs_from_another_directory(tmp_path, monkeypatch, capsys):
    """`fit --print_config > my.yaml`, then `--config my.yaml` elsewhere: the printed input paths are
    absolute (mutation: without `AnchoredParser`, init_from prints as ../checkpoints/base.ckpt, which
    resolves from my.yaml's directory to nothing and fails the parse naming model.init_from)."""
    with pytest.raises(SystemExit):
        MixalignCLI(args=["fit", "--config", str(REPO / "configs" / "pile.yaml"), "--print_config"])
    printed = capsys.readouterr().out
    (tmp_path / "my.yaml").write_text(printed)
    assert Path(yaml.safe_load(printed)["model"]["init_from"]).is_absolute()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        MixalignCLI(args=["fit", "--config", "my.yaml", "--print_config"])
    assert capsys.readouterr().out == printed
