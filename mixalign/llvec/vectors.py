"""Log-likelihood vectors on disk: one model's log p(x_i) for every text of one text set.

A vector is stored as an `.npz` with arrays ``values`` (float64), ``n_bytes`` (int64),
``domains`` (unicode) and ``header`` (a JSON string: format, version, textset_hash, model,
mean_bytes, meta). No pickles: loading never executes code.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mixalign.errors import DataError, MixalignError
from mixalign.io import atomic_path

FORMAT = "mixalign-llvec"
VERSION = 1


@dataclass
class LogLikelihoodVector:
    values: np.ndarray  # float64 (N,): log p(x_i) in nats
    textset_hash: str
    model: str  # description of the model that was scored
    mean_bytes: float  # B of the text set
    domains: tuple[str, ...]  # per text
    n_bytes: np.ndarray  # int64 (N,): UTF-8 bytes per text
    meta: dict = field(default_factory=dict)  # tokenizer id, n_windowed, clipping, ...

    def __post_init__(self):
        self.values = np.asarray(self.values, dtype=np.float64)
        self.n_bytes = np.asarray(self.n_bytes, dtype=np.int64)
        self.domains = tuple(str(d) for d in self.domains)
        self.mean_bytes = float(self.mean_bytes)
        n = len(self.values)
        if self.values.ndim != 1 or self.n_bytes.shape != (n,) or len(self.domains) != n:
            raise ValueError(
                f"log-likelihood vector of {self.model!r}: values {self.values.shape}, n_bytes "
                f"{self.n_bytes.shape} and {len(self.domains)} domains must all have one entry per text"
            )

    def __len__(self) -> int:
        return len(self.values)


def vector_from_scores(result, textset, model: str, meta: dict | None = None) -> LogLikelihoodVector:
    """Wrap a `ScoreResult` for `textset` (what was scored) as a vector."""
    if len(result.values) != len(textset):
        raise ValueError(f"{len(result.values)} scores for a text set of {len(textset)} texts")
    info = {"n_windowed": int(result.n_windowed), "n_tokens": int(result.n_tokens), "textset": textset.meta}
    info.update(meta or {})
    return LogLikelihoodVector(
        values=np.asarray(result.values, dtype=np.float64).copy(),
        textset_hash=textset.hash,
        model=model,
        mean_bytes=textset.mean_bytes,
        domains=tuple(textset.domains),
        n_bytes=textset.n_bytes.copy(),
        meta=info,
    )


def _npz_path(path) -> Path:
    path = Path(os.fspath(path))
    return path if path.name.endswith(".npz") else path.with_name(path.name + ".npz")


def save_vector(vec: LogLikelihoodVector, path) -> Path:
    """Write `vec` atomically; ``.npz`` is appended to names without it (as numpy does). Returns the path."""
    path = _npz_path(path)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "textset_hash": vec.textset_hash,
        "model": vec.model,
        "mean_bytes": vec.mean_bytes,
        "meta": vec.meta,
    }
    with atomic_path(path) as tmp:
        np.savez(
            tmp,
            values=vec.values,
            n_bytes=vec.n_bytes,
            domains=np.array(vec.domains, dtype=str),
            header=np.array(json.dumps(header, ensure_ascii=False, sort_keys=True)),
        )
    return path


def load_vector(path) -> LogLikelihoodVector:
    """Read a vector written by `save_vector` (a name without ``.npz`` also finds ``name.npz``)."""
    path = Path(os.fspath(path))
    if not path.is_file() and _npz_path(path).is_file():
        path = _npz_path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such log-likelihood vector file")
    if not zipfile.is_zipfile(path):  # np.load would try it as a pickle and say so
        raise DataError(f"{path}: not a log-likelihood vector (an .npz is a zip archive; this file is not one)")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"values", "n_bytes", "domains", "header"} - set(z.files)
            if missing:
                raise DataError(f"{path}: not a mixalign log-likelihood vector (missing {sorted(missing)})")
            header = json.loads(str(z["header"][()]))
            values, n_bytes, domains = z["values"], z["n_bytes"], z["domains"]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DataError(f"{path}: cannot read log-likelihood vector (truncated or not an .npz?): {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise DataError(f"{path}: not a mixalign log-likelihood vector")
    if header.get("version") != VERSION:
        raise DataError(f"{path}: vector format version {header.get('version')!r} is not supported (expected {VERSION})")
    if values.dtype != np.float64:
        raise DataError(f"{path}: values are {values.dtype}, expected float64")
    if values.ndim != 1 or values.shape != n_bytes.shape or len(domains) != len(values):
        raise DataError(f"{path}: inconsistent log-likelihood vector: {values.shape} values, {n_bytes.shape} byte "
                        f"counts, {len(domains)} domains")
    if not np.isfinite(values).all():
        raise DataError(f"{path}: {int((~np.isfinite(values)).sum())} of its values are NaN or infinite")
    try:
        return LogLikelihoodVector(
            values=values,
            textset_hash=header["textset_hash"],
            model=header["model"],
            mean_bytes=header["mean_bytes"],
            domains=tuple(domains.tolist()),
            n_bytes=n_bytes,
            meta=header.get("meta") or {},
        )
    except (KeyError, ValueError) as exc:
        raise DataError(f"{path}: inconsistent log-likelihood vector: {exc}") from None


def check_same_textset(*vectors: LogLikelihoodVector) -> None:
    """Raise ValueError unless all vectors were scored on the identical text set."""
    if not vectors:
        return
    first = vectors[0]
    for other in vectors[1:]:
        if other.textset_hash != first.textset_hash or len(other) != len(first):
            raise MixalignError(
                f"log-likelihood vectors are on different text sets: {first.model!r} on text set "
                f"{first.textset_hash[:12]} (N={len(first)}) vs {other.model!r} on text set "
                f"{other.textset_hash[:12]} (N={len(other)}); score both models on the same text set"
            )


def subset_vector(vec: LogLikelihoodVector, subset) -> LogLikelihoodVector:
    """The entries of `vec` (scored on a full text set) for `subset`, made by `subset_textset`."""
    from mixalign.llvec.textset import subset_indices

    keep = subset_indices(len(vec.values), len(subset))
    picked = LogLikelihoodVector(
        values=vec.values[keep], textset_hash=subset.hash, model=vec.model, mean_bytes=subset.mean_bytes,
        domains=tuple(subset.domains), n_bytes=subset.n_bytes.copy(), meta={**vec.meta, "subset_of": vec.textset_hash},
    )
    if tuple(np.asarray(vec.domains)[keep]) != picked.domains:
        raise MixalignError(f"vector {vec.model}: its texts do not match the subset {subset.hash[:12]}")
    return picked
