"""The shipped configs: every key commented, the composed ones (`config: base.yaml` plus dotted keys) read
as their base with those keys changed, and the benchmarks' reader of them agreeing with the CLI's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from helpers import REPO

from benchmarks._common import read_config
from mixalign.cli.lightning import MixalignCLI

CONFIGS = sorted(path.name for path in (REPO / "configs").glob("*.yaml"))
SETTING = re.compile(r"^\s*(- )?[\w.]+:\s*[^\s#]")  # a key with its value on the line
COMPOSED = {name: yaml.safe_load((REPO / "configs" / name).read_text())["config"]
            for name in CONFIGS if "config" in yaml.safe_load((REPO / "configs" / name).read_text())}


def printed(name: str, capsys) -> dict:
    """The config as `mixalign fit --config configs/<name> --print_config` resolves it."""
    with pytest.raises(SystemExit):
        MixalignCLI(args=["fit", "--config", str(REPO / "configs" / name), "--print_config"])
    return yaml.safe_load(capsys.readouterr().out)


def flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "weights":
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("name", CONFIGS)
def test_every_key_of_every_shipped_config_is_commented(name):
    """Configs are the user's interface (litgpt's habit): each setting says why it has its value."""
    lines = (REPO / "configs" / name).read_text().splitlines()
    bare = [line for line in lines if SETTING.match(line) and "#" not in line]
    assert not bare, f"{name}: keys without a comment: {bare}"


def test_configs_compose_rather_than_copy():
    """scratch.yaml is pile.yaml changed; near.yaml and target.yaml are base.yaml changed (no copied groups)."""
    assert COMPOSED == {"scratch.yaml": "pile.yaml", "near.yaml": "base.yaml", "target.yaml": "base.yaml"}
    for name in COMPOSED:
        keys = [k for k in yaml.safe_load((REPO / "configs" / name).read_text()) if k != "config"]
        assert all("." in key or key == "seed_everything" for key in keys), f"{name} copies a whole group: {keys}"


@pytest.mark.parametrize("name", sorted(COMPOSED))
def test_a_composed_config_is_its_base_with_its_own_keys_changed(name, capsys):
    """Every field the composed file does not set is its base's, as the CLI reads both (mutation: jsonargparse
    replacing a group that a dotted key touches, as it does for `group: file` plus dotted keys, fails here)."""
    own = {key for key in yaml.safe_load((REPO / "configs" / name).read_text()) if key != "config"}
    base, composed = flat(printed(COMPOSED[name], capsys)), flat(printed(name, capsys))
    assert set(base) == set(composed)
    changed = {key for key in base if base[key] != composed[key]}
    assert changed and changed <= own | {"model.block_size"}, changed  # block_size: linked from data.block_size


@pytest.mark.parametrize("name", [name for name in CONFIGS if name != "pile-gpt2.yaml"])  # its /data paths: a cluster's
def test_the_benchmarks_read_each_config_as_the_cli_does(name, capsys):
    """`benchmarks/_common.read_config` (the scripts' plain-dict reader) agrees with the CLI on every key it
    returns; a path printed absolute by the CLI ends with the file's relative one."""
    cli = flat(printed(name, capsys))
    cli.setdefault("model.block_size", cli["data.block_size"])  # a link target is not printed: it is data's
    for key, value in flat(read_config(name)).items():
        shown = cli[key]
        path = isinstance(value, str) and value.startswith("../")  # printed absolute, from the config's folder
        same = shown == value or (path and str(shown).endswith(value.removeprefix("..")))
        assert same, f"{name}: {key} is {value!r} to read_config, {shown!r} to the CLI"


def test_read_config_applies_dotted_keys_over_its_base():
    scratch, pile = read_config("scratch.yaml"), read_config("pile.yaml")
    assert scratch["trainer"]["max_steps"] == 600 and pile["trainer"]["max_steps"] == 400
    assert scratch["trainer"]["val_check_interval"] == pile["trainer"]["val_check_interval"] == 100
    assert scratch["model"]["init_from"] is None and scratch["model"]["n_layer"] == pile["model"]["n_layer"]
    assert scratch["mixture"]["candidates"] == ["lag", "closing"] and scratch["mixture"]["target"] == "../checkpoints/near.ckpt"
    assert Path(REPO / "configs" / scratch["mixture"]["target"]).resolve().is_file()
