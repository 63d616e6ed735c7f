"""The parsers of mixalign's own subcommands: a help formatter that keeps line breaks, and the
arguments several subcommands share (`--config` with the `data:` section, the device, a text set)."""

from __future__ import annotations

import argparse
from typing import Any, Callable, Optional

import torch
from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter

from mixalign.data.datamodule import PileMixtureDataModule
from mixalign.llvec.textset import load_textset, resolve_textset, subset_textset

OTHER_SECTIONS = ("seed_everything", "trainer", "model", "checkpoint", "mixture", "kl", "ckpt_path")


class LineBreakFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, with the line breaks of descriptions and epilogs (the subcommand list) kept."""


def default_device() -> str:
    """cuda where there is a GPU, else cpu."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _parser(name: str, main: Callable) -> ArgumentParser:
    """The parser of `mixalign NAME`: its main's docstring is the --help description."""
    return ArgumentParser(prog=f"mixalign {name}", description=main.__doc__, formatter_class=LineBreakFormatter)


def _textset(spec: str, n_texts: int | None):
    """A text set ('demo' or a file), or an evenly spaced subset of n_texts of it."""
    textset = load_textset(resolve_textset(spec))
    return subset_textset(textset, n_texts) if n_texts else textset


def _data_parser(name: str, main: Callable) -> ArgumentParser:
    """`--config` and the `data:` section only; the config's other sections are read and ignored."""
    parser = _parser(name, main)
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="a mixalign config (its data: section is used)")
    parser.add_class_arguments(PileMixtureDataModule, "data")
    for section in OTHER_SECTIONS:
        parser.add_argument(f"--{section}", type=Optional[Any], default=None, help="(not used by this subcommand)")
    return parser
