"""The command line a new user reads first: help that helps, no advertised command that crashes,
and `--ckpt_path last` that never starts over silently (issue 18, items 2 and 6)."""

from __future__ import annotations

import re

import pytest
from helpers import mixalign, tiny

pytestmark = pytest.mark.slow

SUBCOMMANDS = ("prepare", "weights", "score", "kl", "textset", "sample", "export", "eval")


def test_top_level_help_lists_every_subcommand_on_its_own_line(tmp_path):
    out = mixalign("--help", cwd=tmp_path).stdout
    for name in ("fit", "validate"):
        assert re.search(rf"^\s+{name}\s+\S", out, re.M), name
    for name in SUBCOMMANDS:
        assert re.search(rf"^\s+mixalign {name}\s+\S.*$", out, re.M), name


@pytest.mark.parametrize("name", ["test", "predict"])
def test_trainer_subcommands_that_mixalign_does_not_support_are_refused(tmp_path, name):
    result = mixalign(name, cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert f"invalid choice: '{name}'" in result.stderr and "Traceback" not in result.stderr


def test_weights_help_exits_0_and_documents_out(tmp_path):
    out = mixalign("weights", "--help", cwd=tmp_path).stdout
    assert re.search(r"^\s+--out OUT\s+the weights YAML to write", out, re.M)


def test_prepare_help_shows_data_options_only(tmp_path):
    out = mixalign("prepare", "--help", cwd=tmp_path).stdout
    assert "--data.tokenizer" in out and "--data.source" in out
    assert "--trainer." not in out and "--model." not in out
    assert len(out.splitlines()) < 200


def test_fit_help_offers_no_optimizer_or_scheduler_it_would_ignore(tmp_path):
    out = mixalign("fit", "--help", cwd=tmp_path).stdout
    assert "--model.learning_rate" in out
    assert not re.search(r"--(optimizer|lr_scheduler)\b", out)


def test_ckpt_path_last_with_nothing_to_resume_is_an_error_not_a_fresh_start(tmp_path, demo_cache):
    result = mixalign("fit", *tiny("--ckpt_path", "last", cache=demo_cache), cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "--ckpt_path last: no last.ckpt in" in result.stderr and "nothing to resume" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("runs/tiny/lightning_logs/version_*")), "a run directory was left behind"


def test_a_bug_keeps_its_traceback_and_a_user_error_is_one_line(monkeypatch, capsys):
    """main() turns MixalignError into `mixalign: error: ...` and exit 2, and nothing else: a bug
    (here a RuntimeError from a subcommand) propagates with its traceback."""
    import mixalign.cli as cli
    from mixalign.errors import MixalignError

    def bug(args):
        raise RuntimeError("a bug")

    def user_error(args):
        raise MixalignError("--out x: is a directory")

    monkeypatch.setitem(cli.SUBCOMMANDS, "score", cli.Subcommand(bug, "s"))
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["score"])
    monkeypatch.setitem(cli.SUBCOMMANDS, "score", cli.Subcommand(user_error, "s"))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["score"])
    assert exit_.value.code == 2 and capsys.readouterr().err == "mixalign: error: --out x: is a directory\n"


def test_version(capsys):
    from importlib.metadata import version

    from mixalign.cli import main

    main(["--version"])
    assert capsys.readouterr().out == f"mixalign {version('mixalign')}\n"
