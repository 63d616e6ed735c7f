"""Paths a config file names resolve from that file's directory, not from where mixalign runs.

`InputPath` is a jsonargparse path type (its public mechanism for this): a relative path read from
`--config runs/a/c.yaml` is taken relative to `runs/a/`, one typed on the command line relative to
the current directory, and a path that does not exist is a parse error naming the key. Outputs
(`trainer.default_root_dir`, `checkpoint.dirpath`, cache directories) are where the run writes and
stay relative to the current directory, as in Lightning. The CLI turns every resolved path into an
absolute path before any class is built (`anchored`), so the saved `config.yaml` and the
checkpoints' hyper-parameters work from any directory, and the classes keep plain strings (`plain`).
"""

from __future__ import annotations

import os

from jsonargparse import Namespace
from jsonargparse import Path as ParsedPath
from jsonargparse.typing import path_type

InputPath = path_type("r", docstring="an existing file or directory; relative to the config file that names it")


def anchored(config: Namespace) -> Namespace:
    """The parsed config with every path made absolute, in place. They stay parsed paths, so the
    config still dumps; what is dumped from it (the run's config.yaml, the hyper-parameters in
    checkpoints) then names files that exist from any directory."""
    return _map_paths(config, lambda path: type(path)(os.fspath(path)))


def plain(value):
    """`value` with each parsed path as an absolute string: what mixalign's classes keep."""
    return _map_paths(value, os.fspath)


def _map_paths(value, fn):
    if isinstance(value, ParsedPath):
        return fn(value)
    if isinstance(value, Namespace):
        for key, item in list(vars(value).items()):
            setattr(value, key, _map_paths(item, fn))
        return value
    if isinstance(value, list):
        return [_map_paths(item, fn) for item in value]
    if isinstance(value, dict):
        return {key: _map_paths(item, fn) for key, item in value.items()}
    return value


def shown_path(path: str | os.PathLike) -> str:
    """A path as a record should show it: relative to the current directory when it lies inside it,
    so a file written here does not carry this machine's directory layout."""
    path = os.fspath(path)
    relative = os.path.relpath(path) if os.path.isabs(path) else path
    return path if relative.startswith("..") else relative
