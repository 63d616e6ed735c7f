"""The fixed, held-out text set that log-likelihood vectors are measured on (docs/method.md, section 2).

Protocol: documents held out of training (`is_heldout` with the data split's seed and fraction)
are cut into consecutive UTF-8-safe chunks of at most `max_bytes` bytes; chunks longer than
`min_bytes` bytes are candidates; `n` of them are drawn without replacement with
`numpy.random.default_rng(seed)` (optionally stratified by domain). The order of the texts is
fixed -- sorted by (domain, position in the corpus) -- and the whole set is identified by a
sha256 hash, so vectors are only ever compared on the identical texts.

File format (`.jsonl` or `.jsonl.zst`): a header line
``{"format": "mixalign-textset", "version": 1, "hash": ..., "n": ..., "meta": {...}}``
followed by one ``{"text": ..., "domain": ...}`` object per line, in order.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from mixalign.data.prepare import is_heldout
from mixalign.data.reader import DEFAULT_DOMAIN_FIELD, read_documents, zstd_chunks
from mixalign.errors import DataError
from mixalign.io import write_bytes_atomic

FORMAT = "mixalign-textset"
VERSION = 1
DEMO_TEXTSET = "demo"
_HASH_PREFIX = b"mixalign-textset-v1\n"
FEW_TEXTS = 5  # below this many texts a domain is all but invisible to every distance on the text set


def utf8_chunks(text: str, max_bytes: int = 1024) -> list[str]:
    """Consecutive chunks of at most `max_bytes` UTF-8 bytes, never splitting a character.

    ``"".join(utf8_chunks(t, m)) == t`` always; every chunk except possibly the last is as long
    as it can be without cutting a multi-byte character in two.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 4:
        raise ValueError(f"max_bytes must be an int >= 4 (a UTF-8 character can take 4 bytes), got {max_bytes!r}")
    data = text.encode("utf-8")
    chunks = []
    start, size = 0, len(data)
    while start < size:
        end = min(start + max_bytes, size)
        # A byte 0b10xxxxxx continues a character: move the cut back to that character's start.
        while end < size and (data[end] & 0xC0) == 0x80:
            end -= 1
        chunks.append(data[start:end].decode("utf-8"))
        start = end
    return chunks


def _textset_hash(domains: Sequence[str], texts: Sequence[str]) -> str:
    """sha256 hex of the ordered (domain, text) pairs.

    Byte encoding: ``b"mixalign-textset-v1\\n"``, then for each pair in order
    ``u64le(len(d)) + d + u64le(len(t)) + t`` where d and t are the UTF-8 bytes of the domain
    and the text. Length prefixes make the encoding unambiguous for any content.
    """
    h = hashlib.sha256(_HASH_PREFIX)
    for domain, text in zip(domains, texts, strict=True):
        for part in (domain.encode("utf-8"), text.encode("utf-8")):
            h.update(struct.pack("<Q", len(part)))
            h.update(part)
    return h.hexdigest()


@dataclass(frozen=True)
class TextSet:
    """N texts with their domains, in a fixed order, plus the protocol that produced them."""

    texts: tuple[str, ...]
    domains: tuple[str, ...]
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "texts", tuple(self.texts))
        object.__setattr__(self, "domains", tuple(self.domains))
        if len(self.texts) != len(self.domains):
            raise ValueError(f"TextSet has {len(self.texts)} texts but {len(self.domains)} domains")
        for i, (t, d) in enumerate(zip(self.texts, self.domains)):
            if not isinstance(t, str) or not isinstance(d, str):
                raise ValueError(f"TextSet entry {i}: text and domain must be strings")

    __hash__ = None  # meta is a dict; use .hash (the content hash) as the identity

    def __len__(self) -> int:
        return len(self.texts)

    @cached_property
    def n_bytes(self) -> np.ndarray:
        """UTF-8 byte length of each text (np.int64, N)."""
        return np.fromiter((len(t.encode("utf-8")) for t in self.texts), dtype=np.int64, count=len(self.texts))

    @property
    def mean_bytes(self) -> float:
        """B: mean UTF-8 bytes per text, the unit conversion to bits per byte."""
        if not self.texts:
            raise ValueError("mean_bytes of an empty text set is undefined")
        return float(self.n_bytes.mean())

    @cached_property
    def hash(self) -> str:
        """sha256 hex over the ordered (domain, text) pairs (see `_textset_hash` for the bytes)."""
        return _textset_hash(self.domains, self.texts)

    @property
    def domain_names(self) -> list[str]:
        return sorted(set(self.domains))

    def domain_counts(self) -> dict[str, int]:
        return {d: self.domains.count(d) for d in self.domain_names}

    def scarce_domains(self, domains: Sequence[str]) -> dict[str, int]:
        """Those of `domains` with fewer than FEW_TEXTS texts here, and their counts (0 for absent)."""
        counts = self.domain_counts()
        return {d: counts.get(d, 0) for d in domains if counts.get(d, 0) < FEW_TEXTS}


# -- building -----------------------------------------------------------------------------------

def _candidates(source, split_seed: int, val_fraction: float, domains, max_bytes: int, min_bytes: int,
                domain_field: str) -> Iterator[tuple[str, str]]:
    """(domain, chunk) for every candidate chunk, in corpus order (shard, line, chunk index)."""
    for doc in read_documents(source, domain_field=domain_field):
        if domains is not None and doc.domain not in domains:
            continue
        if not is_heldout(doc.text, split_seed, val_fraction):
            continue
        for chunk in utf8_chunks(doc.text, max_bytes):
            if len(chunk.encode("utf-8")) > min_bytes:
                yield doc.domain, chunk


def _stratified_allocation(available: dict[str, int], n: int, rng: np.random.Generator) -> dict[str, int]:
    """Split n as equally over domains as their availability allows (water-filling).

    Domains with fewer candidates than an equal share give all they have; the rest is shared
    equally among the others. A remainder smaller than the number of open domains goes to
    domains picked by `rng`.
    """
    alloc = {d: 0 for d in available}
    remaining = n
    while remaining > 0:
        open_ = [d for d in sorted(available) if alloc[d] < available[d]]
        if not open_:  # cannot happen when n <= total; kept as a guard against infinite loops
            raise DataError("stratified allocation ran out of candidates")
        share = remaining // len(open_)
        if share == 0:
            for i in sorted(rng.choice(len(open_), size=remaining, replace=False)):
                alloc[open_[i]] += 1
            break
        for d in open_:
            take = min(share, available[d] - alloc[d])
            alloc[d] += take
            remaining -= take
    return alloc


def _draw(source, n, seed, split_seed, val_fraction, domain_filter, stratify, max_bytes, min_bytes,
          available: dict[str, int], domain_field: str) -> list[tuple[str, int, str]]:
    """Pass 2: draw which candidates to keep (indices into each domain's candidate list when
    stratified, into the whole list otherwise) and collect them as (domain, corpus index, text)."""
    total = sum(available.values())
    rng = np.random.default_rng(seed)
    if stratify:
        alloc = _stratified_allocation(available, n, rng)
        chosen = {d: set(rng.choice(available[d], size=alloc[d], replace=False).tolist()) for d in sorted(available)}
    else:
        chosen_all = set(rng.choice(total, size=n, replace=False).tolist())
    picked: list[tuple[str, int, str]] = []
    seen: dict[str, int] = {}
    index = -1
    for index, (domain, chunk) in enumerate(
        _candidates(source, split_seed, val_fraction, domain_filter, max_bytes, min_bytes, domain_field)
    ):
        k = seen.get(domain, 0)
        seen[domain] = k + 1
        if (k in chosen[domain]) if stratify else (index in chosen_all):
            picked.append((domain, index, chunk))
    if index + 1 != total or len(picked) != n:
        raise DataError(f"{source!r} changed while the text set was being built; run again")
    return picked


def build_textset(
    source,
    n: int,
    seed: int,
    split_seed: int,
    val_fraction: float,
    domains: Sequence[str] | None = None,
    stratify: bool = False,
    max_bytes: int = 1024,
    min_bytes: int = 256,
    domain_field: str = DEFAULT_DOMAIN_FIELD,
) -> TextSet:
    """Sample n held-out chunks of `source` (see the module docstring for the protocol).

    Two passes over the source: the first counts candidates per domain, the second keeps the
    sampled ones, so memory stays O(n) however large the corpus. The result is ordered by
    (domain, corpus order), independent of the order in which the sample was drawn.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise DataError(f"text set size n must be an int, got {n!r}")
    if n <= 0:
        raise DataError(f"text set with zero texts: n must be positive, got n = {n}")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if min_bytes < 0 or min_bytes >= max_bytes:
        raise DataError(f"need 0 <= min_bytes < max_bytes, got min_bytes={min_bytes}, max_bytes={max_bytes}")
    domain_filter = None if domains is None else frozenset(domains)
    if domain_filter is not None and not domain_filter:
        raise DataError("domains is an empty list: give None for all domains, or some names")

    # Pass 1: count candidates per domain.
    available: dict[str, int] = {}
    for domain, _ in _candidates(source, split_seed, val_fraction, domain_filter, max_bytes, min_bytes, domain_field):
        available[domain] = available.get(domain, 0) + 1
    total = sum(available.values())
    if domain_filter is not None and (missing := sorted(domain_filter - set(available))):
        raise DataError(f"no held-out chunks for domain(s) {missing} in {source!r} (found: {sorted(available)})")
    if total < n:
        raise DataError(
            f"text set of n = {n} requested, but only {total} chunks are available in {source!r} "
            f"(held-out documents at split seed {split_seed}, val_fraction {val_fraction}, "
            f"chunks of {min_bytes + 1}..{max_bytes} bytes; per domain: {dict(sorted(available.items()))})"
        )

    picked = _draw(source, n, seed, split_seed, val_fraction, domain_filter, stratify, max_bytes, min_bytes, available, domain_field)
    picked.sort(key=lambda p: (p[0], p[1]))

    meta = {
        "max_bytes": max_bytes,
        "min_bytes": min_bytes,
        "n": n,
        "seed": seed,
        "stratified": bool(stratify),
        "source": _source_meta(source),
        "domains": None if domains is None else sorted(domain_filter),
        "split": {"seed": split_seed, "val_fraction": val_fraction},
        "available": dict(sorted(available.items())),
        "order": "domain, corpus order",
    }
    return TextSet(tuple(p[2] for p in picked), tuple(p[0] for p in picked), meta)


def _source_meta(source):
    """The source as JSON, comparable with data.source (a `{domain: path}` mapping stays one)."""
    if isinstance(source, Mapping):
        return {str(domain): _source_meta(spec) for domain, spec in source.items()}
    return [str(s) for s in source] if isinstance(source, (list, tuple)) else str(source)


# -- files --------------------------------------------------------------------------------------

def subset_indices(total: int, n: int) -> np.ndarray:
    """Which texts an `n`-text subset keeps: evenly spaced, so every domain keeps its share."""
    return np.linspace(0, total - 1, n).round().astype(int)


def subset_textset(ts: TextSet, n: int) -> TextSet:
    """An evenly spaced subset of `n` texts (every domain keeps its share), for quicker scoring.

    A subset is a text set of its own: it has its own hash, so its vectors never mix with the full set's.
    """
    if not 0 < n <= len(ts):
        raise DataError(f"n_texts must be between 1 and {len(ts)} (the text set's size), got {n}")
    keep = subset_indices(len(ts), n)
    return TextSet(
        texts=tuple(ts.texts[i] for i in keep),
        domains=tuple(ts.domains[i] for i in keep),
        meta={**ts.meta, "subset_of": ts.hash, "subset_of_n": len(ts), "n": n},
    )


def _is_zst(path: Path) -> bool:
    return path.name.endswith(".zst")


def _check_suffix(path: Path) -> None:
    if not (path.name.endswith(".jsonl") or path.name.endswith(".jsonl.zst")):
        raise DataError(f"{path}: a text set file must end in .jsonl or .jsonl.zst")


def save_textset(ts: TextSet, path: str | os.PathLike) -> Path:
    """Write `ts` to a .jsonl or .jsonl.zst file atomically (temp file + os.replace)."""
    path = Path(os.fspath(path))
    _check_suffix(path)
    header = {"format": FORMAT, "version": VERSION, "hash": ts.hash, "n": len(ts), "meta": ts.meta}
    buf = io.BytesIO()
    buf.write(json.dumps(header, ensure_ascii=False, sort_keys=True).encode("utf-8") + b"\n")
    for text, domain in zip(ts.texts, ts.domains):
        # json.dumps escapes \n and \r inside strings, so each record is exactly one line.
        buf.write(json.dumps({"text": text, "domain": domain}, ensure_ascii=False).encode("utf-8") + b"\n")
    data = buf.getvalue()
    if _is_zst(path):
        import zstandard

        data = zstandard.ZstdCompressor(level=19).compress(data)
    write_bytes_atomic(path, data)
    return path


def resolve_textset(spec: str | os.PathLike) -> Path:
    """Path of a text set: ``"demo"`` is the shipped one, anything else a .jsonl[.zst] path."""
    if isinstance(spec, str) and spec == DEMO_TEXTSET:
        from mixalign.assets import asset_path

        path = asset_path("textsets", "demo.jsonl.zst")
        if not path.is_file():
            raise DataError(f"the shipped demo text set is missing ({path}); rebuild it with scripts/build_textset.py")
        return path
    path = Path(os.fspath(spec)).expanduser()
    if not path.is_file():
        raise DataError(f"text set {os.fspath(spec)!r}: no such file (give a .jsonl/.jsonl.zst text set or 'demo')")
    return path


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read text set ({e.strerror or e})") from None
    if _is_zst(path):
        return b"".join(zstd_chunks(io.BytesIO(raw), path))
    return raw


def load_textset(path: str | os.PathLike) -> TextSet:
    """Read a text set written by `save_textset` (or ``"demo"``), verifying its hash."""
    path = resolve_textset(path)
    lines = _read_bytes(path).split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        raise DataError(f"{path}: empty file, not a mixalign text set")
    try:
        header = json.loads(lines[0].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise DataError(f"{path}: not a mixalign text set (first line is not a {FORMAT!r} header)")
    if header.get("version") != VERSION:
        raise DataError(f"{path}: text set format version {header.get('version')!r} is not supported (expected {VERSION})")
    texts, domains = [], []
    for number, line in enumerate(lines[1:], start=2):
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{path}:{number}: malformed text set line ({e})") from None
        if not (isinstance(record, dict) and isinstance(record.get("text"), str) and isinstance(record.get("domain"), str)):
            raise DataError(f"{path}:{number}: expected an object with string fields 'text' and 'domain'")
        texts.append(record["text"])
        domains.append(record["domain"])
    ts = TextSet(tuple(texts), tuple(domains), header.get("meta") or {})
    if "n" in header and header["n"] != len(ts):
        raise DataError(f"{path}: header says {header['n']} texts but the file holds {len(ts)} (truncated?)")
    if ts.hash != header.get("hash"):
        raise DataError(
            f"{path}: text set hash mismatch: header says {str(header.get('hash'))[:12]}, "
            f"contents hash to {ts.hash[:12]} (file modified or corrupt)"
        )
    if len(ts) < 2:  # the distance's error bar is a variance over texts: one text has none
        count = "zero texts" if len(ts) == 0 else "1 text"
        raise DataError(f"{path}: text set with {count}; a KL estimate needs at least 2")
    return ts
