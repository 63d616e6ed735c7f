"""The parsers of mixalign's own subcommands: a help formatter that keeps line breaks, parse errors in one
line, the arguments several subcommands share (`--config` with the `data:` section, the device, a text set),
and the checks of what a command line names (its configs, its outputs) made before any work."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import yaml
from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter

from mixalign.data.datamodule import PileMixtureDataModule
from mixalign.errors import MixalignError
from mixalign.llvec.textset import load_textset, resolve_textset, subset_textset

OTHER_SECTIONS = ("seed_everything", "trainer", "model", "checkpoint", "mixture", "kl", "ckpt_path")


class LineBreakFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, with the line breaks of descriptions and epilogs (the subcommand list) kept."""


class OneLineErrors:
    """A parser mixin: a parse error is one line naming the key and the value at fault, exit status 2
    (jsonargparse prints the whole usage, dozens of lines, above a message of several)."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:  # a caller that catches the error gets jsonargparse's own
            return super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        print(f"{prog}: error: {one_line(message)} (--help lists the options)", file=sys.stderr)
        raise SystemExit(2)


def one_line(message: str) -> str:
    """jsonargparse's error message as one line: the key, then each reason and the value given."""
    skip = ("Does not validate against any of the Union subtypes", "Subtypes:", "Errors:", "Given value type:")
    lines = [line.strip(" -") for line in message.splitlines() if line.strip(" -")]
    kept = [line for line in lines if not line.startswith(skip)]
    if kept and kept[0].startswith('Parser key "') and kept[0].endswith('":'):
        kept[0] = kept[0].removeprefix('Parser key "').removesuffix('":') + ":"
        return f"{kept[0]} {'; '.join(kept[1:])}" if len(kept) > 1 else kept[0]
    return "; ".join(kept)


class Parser(OneLineErrors, ArgumentParser):
    """The parser of one of mixalign's own subcommands."""


def check_config_files(argv: list[str]) -> None:
    """Every `--config FILE` on the command line exists and is YAML, else one line naming the file and the
    line at fault (jsonargparse's message names neither). An inline config (a YAML string) is left to it."""
    given = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg in ("-c", "--config")]
    given += [arg.split("=", 1)[1] for arg in argv if arg.startswith("--config=")]
    for name in given:
        path = Path(name)
        if not path.is_file():
            if not any(mark in name for mark in ":{\n"):
                raise MixalignError(f"--config {name}: no such file")
            continue
        try:
            yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise MixalignError(f"--config {name}: not UTF-8 text") from None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise MixalignError(f"--config {name}: not valid YAML{where} ({getattr(error, 'problem', error)})") from None


def output_path(value: str | None, option: str = "--out", directory: bool = False) -> str | None:
    """An output the command will write, checked before any work: a file that is not a directory (or a
    directory that is not a file), under folders that are folders."""
    if value is None:
        return None
    path = Path(value)
    if not directory and path.is_dir():
        raise MixalignError(f"{option} {value}: is a directory; name the file to write")
    if directory and path.exists() and not path.is_dir():
        raise MixalignError(f"{option} {value}: is a file; name a directory to write")
    above = next(folder for folder in path.absolute().parents if folder.exists())
    if not above.is_dir():
        raise MixalignError(f"{option} {value}: {above} is a file, so nothing can be written under it")
    return value


def default_device() -> str:
    """cuda where there is a GPU, else cpu."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _parser(name: str, main: Callable) -> Parser:
    """The parser of `mixalign NAME`: its main's docstring is the --help description."""
    return Parser(prog=f"mixalign {name}", description=main.__doc__, formatter_class=LineBreakFormatter)


def _textset(spec: str, n_texts: int | None):
    """A text set ('demo' or a file), or an evenly spaced subset of n_texts of it."""
    textset = load_textset(resolve_textset(spec))
    return subset_textset(textset, n_texts) if n_texts else textset


def _data_parser(name: str, main: Callable) -> Parser:
    """`--config` and the `data:` section only; the config's other sections are read and ignored."""
    parser = _parser(name, main)
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="a mixalign config (its data: section is used)")
    parser.add_class_arguments(PileMixtureDataModule, "data")
    for section in OTHER_SECTIONS:
        parser.add_argument(f"--{section}", type=Optional[Any], default=None, help="(not used by this subcommand)")
    return parser
