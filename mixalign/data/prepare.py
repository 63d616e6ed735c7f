"""Tokenize a Pile-format corpus once into memory-mapped token files, one per domain and split.

Layout of a prepared directory (`<cache_dir>/<key>/`):
    manifest.json            domains, documents, tokens, bytes, tokenizer hash, input hashes
    tokenizer.json           the tokenizer used (given or trained here)
    <domain>.<split>.bin     uint16/uint32 token ids, documents separated by <|endoftext|>
                             (domain names made filename-safe by `token_file`)

The key hashes everything that determines the content (input paths, sizes and mtimes, tokenizer,
split, domains, and a non-default domain field or per-domain source), so a matching directory is reused and any change prepares a new one. A directory
is built under a temporary name and renamed into place, so a crash or a concurrent preparer never
leaves a half-written cache that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import shutil
import socket
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from mixalign.data.reader import DEFAULT_DOMAIN_FIELD, ReadStats, Shard, read_shard, resolve_shards
from mixalign.data.tokenizer import (
    eot_id,
    load_tokenizer,
    save_tokenizer,
    tokenizer_hash,
    train_bpe,
)
from mixalign.errors import DataError

FORMAT_VERSION = 1
SPLITS = ("train", "val")
_ENCODE_BATCH = 256
ENCODE_CHARS = 1_000_000  # data.encode_chars: the tokenizer's working memory is ~150 bytes a character


def is_heldout(text: str, seed: int, val_fraction: float) -> bool:
    """Whether a document belongs to the validation split.

    A pure function of the document and the seed, so the split does not depend on file order or
    sharding, and later stages (text sets) can tell held-out documents apart without the cache.
    """
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=seed.to_bytes(8, "little", signed=True))
    return int.from_bytes(digest.digest(), "little") / 2**64 < val_fraction


def token_file(domain: str, split: str) -> str:
    """Filename-safe name for a domain's token file (Pile names hold spaces and parentheses)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", domain).strip("_") or "domain"
    return f"{safe}-{hashlib.blake2b(domain.encode(), digest_size=3).hexdigest()}.{split}.bin"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


@dataclass(frozen=True)
class PrepareConfig:
    source: str | Sequence[str] | Mapping[str, str | Sequence[str]]  # a mapping is {domain: path or glob}
    tokenizer: str | None  # shipped name or tokenizer.json path; None trains a BPE
    bpe_vocab_size: int | None
    domains: tuple[str, ...] | None
    val_fraction: float
    split_seed: int
    skip_malformed: bool
    domain_field: str = DEFAULT_DOMAIN_FIELD  # dotted path to each record's domain
    encode_chars: int = ENCODE_CHARS  # the most characters tokenized at once: a longer document goes in pieces


class PreparedData:
    """Read access to a prepared directory: manifest facts and memory-mapped token arrays."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.manifest = json.loads((self.root / "manifest.json").read_text())
        self.domains: list[str] = list(self.manifest["domains"])
        self.dtype = np.dtype(self.manifest["dtype"])

    def tokens(self, domain: str, split: str) -> np.ndarray:
        path = self.root / token_file(domain, split)
        if path.stat().st_size == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(path, dtype=self.dtype, mode="r")

    def count(self, domain: str, split: str, what: str = "tokens") -> int:
        return int(self.manifest["domains"][domain][split][what])

    @property
    def tokenizer_path(self) -> Path:
        return self.root / "tokenizer.json"


@dataclass(frozen=True)
class SplitTokens:
    """Picklable opener of one split's per-domain token arrays: each process maps the files itself."""

    root: Path
    domains: tuple[str, ...]
    split: str

    def __call__(self) -> list[np.ndarray]:
        data = PreparedData(self.root)
        return [data.tokens(domain, self.split) for domain in self.domains]


def _input_fingerprint(paths: list[Path]) -> list[list]:
    return [[str(p), *_stat(p)] for p in paths]


def _stat(path: Path) -> tuple[int, int]:
    if path.is_dir():  # a saved HF dataset: fingerprint its files together
        files = sorted(q for q in path.rglob("*") if q.is_file())
        return sum(q.stat().st_size for q in files), max((q.stat().st_mtime_ns for q in files), default=0)
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(q for q in path.rglob("*") if q.is_file()) if path.is_dir() else [path]:
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def cache_key(config: PrepareConfig, shards: list[Shard]) -> str:
    """Hash of what determines the prepared content; the defaults add nothing, so existing caches stay valid
    (the default `encode_chars` among them: pieces tokenize as the whole document but where a window of that
    many characters has no space starting a word, a case a cache built before pieces existed tokenized whole)."""
    tokenizer = (
        {"hash": tokenizer_hash(load_tokenizer(config.tokenizer))}
        if config.tokenizer is not None
        else {"train_bpe": config.bpe_vocab_size}
    )
    payload = {
        "format": FORMAT_VERSION,
        "inputs": _input_fingerprint([path for path, _ in shards]),
        "tokenizer": tokenizer,
        "domains": sorted(config.domains) if config.domains else None,
        "val_fraction": config.val_fraction,
        "split_seed": config.split_seed,
        "skip_malformed": config.skip_malformed,
    }
    if config.domain_field != DEFAULT_DOMAIN_FIELD:
        payload["domain_field"] = config.domain_field
    if config.encode_chars != ENCODE_CHARS:
        payload["encode_chars"] = config.encode_chars
    if isinstance(config.source, Mapping):
        payload["domain_of"] = [[str(path), domain] for path, domain in shards]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def prepare(config: PrepareConfig, cache_dir: str | Path, num_proc: int = 1) -> PreparedData:
    """Return the prepared data for `config`, building it only if no valid cache exists."""
    shards = resolve_shards(config.source)
    key = cache_key(config, shards)
    cache_dir = Path(cache_dir)
    target = cache_dir / key
    _remove_dead_leftovers(cache_dir)
    if _is_valid(target, key):
        return PreparedData(target)
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=temp_prefix(key, os.getpid()), dir=cache_dir))
    try:
        _build(config, shards, key, work, num_proc)
        if target.exists() and not _is_valid(target, key):
            shutil.rmtree(target, ignore_errors=True)  # a stale or damaged cache: replace it
        try:
            os.rename(work, target)
        except OSError:
            if not _is_valid(target, key):  # lost a race to a valid twin -> use theirs
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return PreparedData(target)


def temp_prefix(key: str, pid: int) -> str:
    """The name a preparer's temporary directory starts with: its key, host and process id, so a
    later preparer can tell a dead writer's leftover from a live one's."""
    return f".{key}.{this_host()}-{pid}."


def this_host() -> str:
    """This host's name, and its process-id namespace (containers sharing a name and a cache
    directory see other pids): where a process id means one process."""
    try:
        namespace = "".join(c for c in os.readlink("/proc/self/ns/pid") if c.isdigit())
    except OSError:
        namespace = ""
    return re.sub(r"[^A-Za-z0-9-]+", "-", f"{socket.gethostname()}-ns{namespace}")


_TEMP = re.compile(r"\.[0-9a-f]{20}\.(?:(?P<host>[A-Za-z0-9-]*)-(?P<pid>\d+)\.)?[A-Za-z0-9_]+")
STALE_AFTER_S = 24 * 3600  # a leftover whose writer cannot be checked (another host, an older name)


def _remove_dead_leftovers(cache_dir: Path) -> None:
    """Remove the temporary directories of preparers killed mid-build (up to a tokenized corpus each).

    One of this host is removed when its writer's process is gone; one of another host, or from
    before names carried a pid, when nothing in it changed for a day. A live writer's is kept.
    """
    try:
        entries = [e for e in os.scandir(cache_dir) if _TEMP.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return
    host = this_host()
    for entry in entries:
        match = _TEMP.fullmatch(entry.name)
        if match["pid"] is not None and match["host"] == host:
            dead = not _pid_alive(int(match["pid"]))
        else:
            dead = time.time() - _newest_mtime(Path(entry.path)) > STALE_AFTER_S
        if dead:
            shutil.rmtree(entry.path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (a pid out of range is none)
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _newest_mtime(root: Path) -> float:
    newest = 0.0
    for folder, _, files in os.walk(root):
        for name in [folder, *(os.path.join(folder, f) for f in files)]:
            try:
                newest = max(newest, os.lstat(name).st_mtime)
            except OSError:
                return time.time()  # changing under us: a live writer
    return newest


def _is_valid(root: Path, key: str) -> bool:
    """A cache is trusted only if its manifest matches the key and every token file has its size."""
    try:
        manifest = json.loads((root / "manifest.json").read_text())
        if manifest.get("key") != key or not (root / "tokenizer.json").is_file():
            return False
        itemsize = np.dtype(manifest["dtype"]).itemsize
        return all(
            (root / token_file(d, s)).stat().st_size == itemsize * manifest["domains"][d][s]["tokens"]
            for d in manifest["domains"]
            for s in SPLITS
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _train_documents(config: PrepareConfig, shards: list[Shard]) -> Iterator[str]:
    for path, domain in shards:
        for doc in read_shard(path, config.skip_malformed, None, config.domain_field, domain):
            if (not config.domains or doc.domain in config.domains) and not is_heldout(
                doc.text, config.split_seed, config.val_fraction
            ):
                yield doc.text


def _build(config: PrepareConfig, shards: list[Shard], key: str, work: Path, num_proc: int) -> None:
    """Tokenize every shard into `work`: per-domain token files, the tokenizer and the manifest."""
    if config.tokenizer is not None:
        tokenizer = load_tokenizer(config.tokenizer)
    else:
        if not config.bpe_vocab_size or config.bpe_vocab_size < 257:
            raise DataError(f"data.bpe_vocab_size must be at least 257 to train a BPE, got {config.bpe_vocab_size}")
        tokenizer = train_bpe(_train_documents(config, shards), config.bpe_vocab_size)
    save_tokenizer(tokenizer, work / "tokenizer.json")
    dtype = token_dtype(tokenizer.get_vocab_size())

    jobs = [(path, domain, work / f"shard{i:05d}", config, dtype.str) for i, (path, domain) in enumerate(shards)]
    if num_proc > 1 and len(jobs) > 1:
        with multiprocessing.get_context("spawn").Pool(min(num_proc, len(jobs))) as pool:
            results = pool.map(_tokenize_shard, jobs)
    else:
        results = [_tokenize_shard(job) for job in jobs]

    seen = sorted({d for r in results for d in r["seen"]})
    if config.domains:
        unknown = sorted(set(config.domains) - set(seen))
        if unknown:
            raise DataError(f"data.domains: unknown domain(s) {unknown}; the data has: {seen}")
    stats = _concatenate(config, results, sorted(config.domains) if config.domains else seen, work)
    malformed = sum(r["malformed"] for r in results)
    if malformed:
        examples = [e for r in results for e in r["examples"]][:5]
        warnings.warn(f"skipped {malformed} malformed line(s) (data.skip_malformed=true), e.g. {examples}")
    manifest = {
        "format": FORMAT_VERSION,
        "key": key,
        "source": _plain_source(config.source),
        "domains": stats,
        "dtype": dtype.name,
        "tokenizer": {
            "spec": config.tokenizer or f"trained byte-level BPE, vocab {config.bpe_vocab_size}",
            "hash": tokenizer_hash(tokenizer),
            "vocab_size": tokenizer.get_vocab_size(),
            "eot_id": eot_id(tokenizer),
        },
        "split": {"split_seed": config.split_seed, "val_fraction": config.val_fraction, "by": "document hash"},
        "inputs": [{"path": r["path"], "sha256": r["sha256"], "documents": r["documents"]} for r in results],
        "skipped_malformed": malformed,
    }
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))


def _plain_source(source):
    """The source as JSON: a string, a list, or {domain: path or glob}."""
    if isinstance(source, str):
        return source
    return dict(source) if isinstance(source, Mapping) else list(source)


def _concatenate(config: PrepareConfig, results: list[dict], domains: list[str], work: Path) -> dict:
    """Join the shards' per-domain parts into one token file per domain and split; their counts."""
    stats = {d: {s: {"documents": 0, "tokens": 0, "bytes": 0} for s in SPLITS} for d in domains}
    for domain in domains:
        for split in SPLITS:
            with open(work / token_file(domain, split), "wb") as out:
                for result in results:
                    part = result["parts"].get((domain, split))
                    if part is None:
                        continue
                    with open(part["file"], "rb") as f:
                        shutil.copyfileobj(f, out, 1 << 22)
                    for field in ("documents", "tokens", "bytes"):
                        stats[domain][split][field] += part[field]
        if stats[domain]["val"]["documents"] == 0:
            raise DataError(
                f"domain {domain!r} has no held-out documents ({stats[domain]['train']['documents']} in all) "
                f"at data.val_fraction={config.val_fraction}: raise val_fraction or add documents"
            )
    for result in results:
        shutil.rmtree(result["dir"], ignore_errors=True)
    return stats


def pieces(text: str, limit: int) -> Iterator[str]:
    """`text` in consecutive pieces of at most `limit` characters, each cut before the window's last space that
    starts a word, so a byte-level BPE (GPT-2's splitting) gives the very tokens of the whole; a window with
    none is cut at `limit` (its seam may tokenize differently). "" is one empty piece."""
    if limit < 1:
        raise ValueError(f"pieces of at most {limit} characters")
    start = 0
    while len(text) - start > limit:
        cut = text.rfind(" ", start + 1, start + limit + 1)
        while cut > start and text[cut + 1:cut + 2].isspace():  # inside a run of whitespace: not a word's start
            cut = text.rfind(" ", start + 1, cut)
        cut = cut if cut > start else start + limit
        yield text[start:cut]
        start = cut
    yield text[start:]


def encoded_pieces(tokenizer, texts: list[str], limit: int) -> Iterator[tuple[int, list[int], bool]]:
    """(index of the text, token ids of its next piece, whether the piece is its last), in order, tokenizing
    at most `limit` characters at a time: the tokenizer keeps whole `Encoding` objects (offsets, strings),
    so one 50 MB line took 7.8 GB."""
    group: list[tuple[int, str, bool]] = []
    size = 0
    for index, text in enumerate(texts):
        cut = list(pieces(text, limit))
        for number, piece in enumerate(cut):
            if group and size + len(piece) > limit:
                yield from _encode_group(tokenizer, group)
                group, size = [], 0
            group.append((index, piece, number == len(cut) - 1))
            size += len(piece)
    yield from _encode_group(tokenizer, group)


def _encode_group(tokenizer, group: list[tuple[int, str, bool]]) -> Iterator[tuple[int, list[int], bool]]:
    encodings = tokenizer.encode_batch([piece for _, piece, _ in group], add_special_tokens=False) if group else []
    for (index, _, last), encoding in zip(group, encodings):
        yield index, encoding.ids, last


def _tokenize_shard(job: tuple[Path, str | None, Path, PrepareConfig, str]) -> dict:
    """Tokenize one shard into per-(domain, split) part files; runs in a worker process when parallel."""
    path, domain, out_dir, config, dtype_str = job
    dtype = np.dtype(dtype_str)
    out_dir.mkdir()
    work = out_dir.parent
    tokenizer = load_tokenizer(work / "tokenizer.json")
    eot = eot_id(tokenizer)
    read_stats = ReadStats()
    parts: dict[tuple[str, str], dict] = {}
    files: dict[tuple[str, str], object] = {}
    seen: set[str] = set()
    documents = 0

    def flush(batch: list) -> None:
        tokens = 0
        for index, ids, last in encoded_pieces(tokenizer, [text for text, _ in batch], config.encode_chars):
            text, part_key = batch[index]
            files[part_key].write(np.asarray(ids + [eot] if last else ids, dtype=dtype).tobytes())
            tokens += len(ids)
            if last:
                part = parts[part_key]
                part["documents"] += 1
                part["tokens"] += tokens + 1
                part["bytes"] += len(text.encode("utf-8"))
                tokens = 0

    batch: list = []
    try:
        for doc in read_shard(path, config.skip_malformed, read_stats, config.domain_field, domain):
            documents += 1
            seen.add(doc.domain)
            if config.domains and doc.domain not in config.domains:
                continue
            split = "val" if is_heldout(doc.text, config.split_seed, config.val_fraction) else "train"
            part_key = (doc.domain, split)
            if part_key not in parts:
                file = out_dir / token_file(doc.domain, split)
                parts[part_key] = {"file": str(file), "documents": 0, "tokens": 0, "bytes": 0}
                files[part_key] = open(file, "wb")
            batch.append((doc.text, part_key))
            if len(batch) >= _ENCODE_BATCH or len(doc.text) >= config.encode_chars:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    finally:
        for f in files.values():
            f.close()
    return {
        "path": str(path),
        "dir": str(out_dir),
        "sha256": _file_sha256(path),
        "documents": documents,
        "seen": sorted(seen),
        "parts": parts,
        "malformed": read_stats.malformed,
        "examples": read_stats.examples,
    }
