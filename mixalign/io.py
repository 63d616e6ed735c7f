"""File input and output: every file mixalign writes appears whole or not at all, and a PyTorch file a user
names is read with `weights_only=True` (it never runs code)."""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from mixalign.errors import MixalignError, first_line


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; once the block succeeds it is renamed onto `path`.

    The rename is atomic on POSIX, so a crash or a kill mid-write never leaves a truncated file
    that a later run would trust; on failure the temporary file is removed. The temporary name
    keeps the suffix, for writers that choose a format by it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are shared files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_torch_file(path: str | os.PathLike, what: str, mmap: bool = False):
    """`torch.load` of a file a user names, `weights_only=True`: a pickled object is refused, never run; a
    cut or foreign file is a one-line error naming it (`what`: the message's noun, e.g. "checkpoint")."""
    import torch  # here: the modules that write files atomically do not need torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise MixalignError(f"{path}: refused: the {what} holds objects other than tensors and plain values, "
                            f"and loading it could run code ({first_line(exc)})") from None
    except Exception as exc:
        raise MixalignError(f"{path}: cannot load {what} (truncated or corrupt, or not a PyTorch file): "
                            f"{first_line(exc)}") from None


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


WRITER_ERRORS = ("inline_container", "PytorchStreamWriter", "file write failed", "unexpected pos")


def atomic_checkpoint_io():
    """Lightning CheckpointIO whose local saves are atomic: a temporary file beside the checkpoint,
    fsynced, then renamed onto it.

    Lightning's own (2.6) stages the file in the system temporary directory and moves it; when that
    is another filesystem (a tmpfs /tmp) the move copies onto the checkpoint in place, so a run
    killed or out of disk space mid-copy loses its `last.ckpt` (tests/test_reliability.py shows
    both). With this one the previous, whole `last.ckpt` survives.
    """
    import torch
    from lightning.fabric.utilities.cloud_io import get_filesystem
    from lightning.fabric.utilities.types import _PATH
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint: dict, path: _PATH, storage_options=None) -> None:
            if storage_options is not None or get_filesystem(path).protocol not in ("file", ("file", "local")):
                return super().save_checkpoint(checkpoint, path, storage_options)
            written = 0
            try:
                with atomic_path(path) as tmp:
                    try:
                        torch.save(checkpoint, tmp)
                    finally:
                        written = tmp.stat().st_size if tmp.exists() else 0
            except (OSError, RuntimeError) as exc:  # torch's writer reports a full disk as a RuntimeError
                if isinstance(exc, RuntimeError) and not any(w in str(exc) for w in WRITER_ERRORS):
                    raise  # not the file's writing: a bug, with its traceback
                raise MixalignError(save_failure(path, written, exc)) from None

    return AtomicCheckpointIO()


def save_failure(path, written: int, exc: BaseException) -> str:
    """One line on a checkpoint that could not be written: where, and whether the disk is full."""
    reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    try:
        free = shutil.disk_usage(Path(path).parent).free
    except OSError:
        free = None
    if getattr(exc, "errno", None) == errno.ENOSPC or (free is not None and free < max(written, 1)):
        reason = (f"no space left on its filesystem ({free} B free, {written} B of it written when it failed; "
                  f"free some space or point the checkpoints elsewhere): {reason}")
    return f"cannot write checkpoint {path}: {reason}; the previous checkpoint there, if any, is kept whole"


def claim_version(root: str | os.PathLike, first: int) -> int:
    """Create `root/version_N` for the first free N >= `first`, atomically (mkdir is exclusive).

    Two runs started at once in one log directory thus never share (and overwrite) a version.
    """
    Path(root).mkdir(parents=True, exist_ok=True)
    version = first
    while True:
        try:
            (Path(root) / f"version_{version}").mkdir()
            return version
        except FileExistsError:
            version += 1
