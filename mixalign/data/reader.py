"""Read Pile-format documents: JSON lines `{"text": ..., "meta": {"pile_set_name": ...}}`.

Sources are `.jsonl` / `.jsonl.zst` shards (files, directories or globs), the shipped demo corpus
(`"demo"`), or local Hugging Face `datasets` data (a `save_to_disk` directory, `.parquet` files).
The domain is the record's `domain_field` (a dotted path, so SlimPajama's `meta.redpajama_set_name`
or Dolma's `source` read as they are), or the key of a `{domain: path or glob}` source.
Every problem is reported with the file and line at fault, because a bad line in a 400 GB corpus
is otherwise impossible to find.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from mixalign.assets import DEMO_CORPUS, demo_corpus_dir
from mixalign.errors import DataError

SHARD_SUFFIXES = (".jsonl", ".jsonl.zst", ".parquet")
PARQUET_BATCH_ROWS = 1024  # rows decoded at a time: memory bounded by a batch, not the file
DEFAULT_DOMAIN_FIELD = "meta.pile_set_name"
Shard = tuple[Path, "str | None"]  # a shard and its domain: None reads it from each record


@dataclass(frozen=True)
class Document:
    text: str
    domain: str
    path: str
    line: int  # 1-based line (row) number within `path`


@dataclass
class ReadStats:
    """What was skipped while reading, so that `skip_malformed` never hides data loss silently."""

    malformed: int = 0
    examples: list[str] = field(default_factory=list)

    def skip(self, where: str, why: str) -> None:
        self.malformed += 1
        if len(self.examples) < 5:
            self.examples.append(f"{where}: {why}")


def _is_hf_saved_dataset(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists())


def resolve_sources(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Expand a source spec into a sorted list of shard files or saved-dataset directories."""
    specs = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not specs:
        raise DataError("data.source is empty: give a file, directory, glob, or 'demo'")
    found: list[Path] = []
    for spec in specs:
        spec = str(spec)
        if spec == DEMO_CORPUS:
            spec = str(demo_corpus_dir())
        path = Path(spec).expanduser()
        if _is_hf_saved_dataset(path):
            found.append(path)
        elif path.is_dir():
            shards = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SHARD_SUFFIXES))
            if not shards:
                raise DataError(f"data.source {spec!r}: directory has no {'/'.join(SHARD_SUFFIXES)} files")
            found.extend(shards)
        elif path.is_file():
            if not path.name.endswith(SHARD_SUFFIXES):
                raise DataError(f"data.source {spec!r}: not a {'/'.join(SHARD_SUFFIXES)} file")
            found.append(path)
        elif glob.has_magic(spec):
            matches = sorted(Path(p) for p in glob.glob(spec, recursive=True) if p.endswith(SHARD_SUFFIXES))
            if not matches:
                raise DataError(f"data.source {spec!r}: glob matches no {'/'.join(SHARD_SUFFIXES)} files")
            found.extend(matches)
        else:
            raise DataError(f"data.source {spec!r}: no such file or directory")
    return sorted(set(p.resolve() for p in found))


def resolve_shards(source) -> list[Shard]:
    """Shards of `source` with their domain: the key of a `{domain: path or glob}` mapping, else None."""
    if not isinstance(source, Mapping):
        return [(path, None) for path in resolve_sources(source)]
    if not source:
        raise DataError("data.source is an empty mapping: give {domain: path or glob}")
    owner: dict[Path, str] = {}
    for domain, spec in source.items():
        try:
            paths = resolve_sources(spec)
        except DataError as e:
            raise DataError(f"data.source domain {domain!r}: pattern {spec!r} matches no data ({e})") from None
        for path in paths:
            if owner.setdefault(path, str(domain)) != str(domain):
                raise DataError(f"data.source: {path} is in both domain {owner[path]!r} and {domain!r}")
    return sorted(owner.items())


def _open_lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as raw:
        if path.name.endswith(".zst"):
            yield from _lines(zstd_chunks(raw, path))
        else:
            yield from raw


ZSTD_READ_BYTES = 1 << 20  # compressed bytes read from the file at a time
ZSTD_FEED_BYTES = 1 << 13  # compressed bytes decompressed at a time: at zstd's largest ratio (~32,000:1), 256 MB


def zstd_chunks(raw, path: Path) -> Iterator[bytes]:
    """The decompressed bytes of every frame of a zstd stream, in order, each chunk from at most ZSTD_FEED_BYTES
    of input. A stream that ends inside a frame (a cut download or copy) is an error naming the file; a cut
    between frames cannot be seen (zstd marks no stream end). Not zstd at all is an error too."""
    import zstandard

    decompressor = zstandard.ZstdDecompressor()
    frame, fed = decompressor.decompressobj(), False
    try:
        while block := raw.read(ZSTD_READ_BYTES):
            view = memoryview(block)
            for offset in range(0, len(view), ZSTD_FEED_BYTES):
                chunk = view[offset:offset + ZSTD_FEED_BYTES]
                while chunk:
                    if out := frame.decompress(chunk):
                        yield out
                    fed = True
                    if not frame.eof:
                        break
                    chunk = frame.unused_data
                    frame, fed = decompressor.decompressobj(), False
    except zstandard.ZstdError as exc:
        raise DataError(f"{path}: not a readable zstd stream (corrupt or not zstd): {exc}") from None
    if fed:
        raise DataError(f"{path}: truncated zstd data: the file ends inside a frame (a cut copy or download?)")


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Lines (each with its newline, the last perhaps without) of a stream of byte chunks; a line longer than a
    chunk is joined once."""
    pending: list[bytes] = []
    for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            yield b"".join([*pending, chunk[start:end + 1]])
            pending, start = [], end + 1
        if start < len(chunk):
            pending.append(chunk[start:])
    if pending:
        yield b"".join(pending)


def _parse_line(raw: bytes, where: str, field: str, domain: str | None) -> tuple[str, str]:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: malformed JSON ({e.msg})") from None
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return _fields(record, where, field, domain)


def _fields(record: dict, where: str, field: str, domain: str | None) -> tuple[str, str]:
    """The record's text and domain (`domain` when the source fixes it, else the dotted `field`)."""
    text = record.get("text")
    if not isinstance(text, str):
        raise DataError(f"{where}: missing string field 'text'")
    if domain is None:
        domain = record
        for key in field.split("."):
            domain = domain.get(key) if isinstance(domain, dict) else None
        if not isinstance(domain, str) or not domain:
            raise DataError(f"{where}: missing string field '{field}' (data.domain_field)")
    return text, domain


def read_shard(
    path: Path, skip_malformed: bool = False, stats: ReadStats | None = None,
    domain_field: str = DEFAULT_DOMAIN_FIELD, domain: str | None = None,
) -> Iterator[Document]:
    """Documents of one shard, in file order. A shard with no documents is an error."""
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    count = 0
    for number, text, domain_of, where, error in _records(path, domain_field, domain):
        if error is not None:
            if not skip_malformed:
                raise error
            stats.skip(where, str(error).split(": ", 1)[-1])
            continue
        count += 1
        yield Document(text, domain_of, str(path), number)
    if count == 0:
        raise DataError(f"{path}: no documents (empty shard{' after skipping malformed lines' if stats.malformed else ''})")


def _records(path: Path, field: str, domain: str | None):
    """(number, text, domain, where, error) per record; errors are returned so callers may skip them."""
    if path.is_dir() or path.name.endswith(".parquet"):
        for number, record in enumerate(_hf_rows(path), start=1):
            where = f"{path}: row {number}"
            try:
                yield (number, *_fields(record, where, field, domain), where, None)
            except DataError as e:
                yield number, None, None, where, e
        return
    for number, raw in enumerate(_open_lines(path), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            yield (number, *_parse_line(raw, where, field, domain), where, None)
        except DataError as e:
            yield number, None, None, where, e


def _hf_rows(path: Path) -> Iterator[dict]:
    """Rows of a `save_to_disk` directory (memory-mapped where it lies) or of a Parquet file, read in record
    batches with pyarrow: `datasets.Dataset.from_parquet` would first copy the file into ~/.cache."""
    if path.is_dir():
        import datasets

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise DataError(f"{path}: saved DatasetDict has no 'train' split (has {sorted(ds)})")
            ds = ds["train"]
        yield from ds
        return
    import pyarrow
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as parquet:
            for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
                yield from batch.to_pylist()
    except (pyarrow.ArrowException, OSError) as exc:
        raise DataError(f"{path}: cannot read the Parquet file (truncated or corrupt?): {exc}") from None


def read_documents(
    source, skip_malformed: bool = False, stats: ReadStats | None = None, domain_field: str = DEFAULT_DOMAIN_FIELD,
) -> Iterator[Document]:
    """Documents of every shard of `source`, shards in sorted path order."""
    for path, domain in resolve_shards(source):
        yield from read_shard(path, skip_malformed, stats, domain_field, domain)
