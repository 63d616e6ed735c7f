"""Tokenizer helpers: load the shipped tokenizers, train small byte-level BPEs, hash and save them.

Everything here is a thin layer over the Hugging Face ``tokenizers`` library so the rest of
mixalign never touches its configuration details (pre-tokenizer, decoder, special tokens).
All tokenizers are byte-level, so any text round-trips exactly through encode/decode.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from mixalign.assets import SHIPPED_TOKENIZERS, asset_path
from mixalign.errors import MixalignError
from mixalign.io import write_bytes_atomic

EOT = "<|endoftext|>"
TOKENIZER_FILE = "tokenizer.json"

__all__ = [
    "EOT",
    "TOKENIZER_FILE",
    "eot_id",
    "load_tokenizer",
    "save_tokenizer",
    "tokenizer_hash",
    "train_bpe",
    "vocabulary_id",
]


def _resolve(spec: str | os.PathLike) -> Path:
    """Turn a shipped name, a tokenizer.json path or a directory into the JSON file's path."""
    if isinstance(spec, str) and spec in SHIPPED_TOKENIZERS:
        path = asset_path("tokenizers", spec, TOKENIZER_FILE)
    else:
        path = Path(os.fspath(spec)).expanduser()
        if path.is_dir():
            path = path / TOKENIZER_FILE
    if not path.is_file():
        raise MixalignError(
            f"no tokenizer found for {os.fspath(spec)!r} (looked for {str(path)!r}); "
            f"give a path to a tokenizer.json, a directory holding one, "
            f"or a shipped name: {', '.join(SHIPPED_TOKENIZERS)}"
        )
    return path


def load_tokenizer(spec: str | os.PathLike) -> Tokenizer:
    """Load a tokenizer from a shipped name ("gpt2", "demo-4k"), a tokenizer.json, or its directory.

    Shipped names win over same-named relative paths so configs behave the same from any cwd.
    """
    path = _resolve(spec)
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises a plain Exception on bad JSON / schema
        raise MixalignError(f"{str(path)!r} is not a valid tokenizers JSON file: {exc}") from exc


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE (GPT-2 style) on ``texts`` with ``vocab_size`` tokens, EOT included.

    All 256 byte symbols are in the initial alphabet, so every string is encodable and
    ``decode(encode(x).ids) == x`` holds for any text not containing the literal EOT string.
    Training is deterministic for the same input (merge ties are broken by the pair itself).
    """
    if vocab_size < 257:
        raise MixalignError(f"vocab_size must be at least 257 (256 bytes + EOT), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def eot_id(tok: Tokenizer) -> int:
    """Id of the end-of-text token that separates documents in packed token streams."""
    tid = tok.token_to_id(EOT)
    if tid is None:
        raise MixalignError(f"tokenizer has no {EOT!r} token; mixalign needs it to separate documents")
    return tid


def tokenizer_hash(tok: Tokenizer) -> str:
    """sha256 hex of the tokenizer's canonical JSON: a cache key for token files made with it."""
    return hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()


def vocabulary_id(tok) -> str:
    """sha256 of the sorted (token, id) vocabulary of a `tokenizers` or Hugging Face tokenizer: equal
    exactly when ids mean the same tokens, so two models' next-token distributions can be compared."""
    vocab = tok.get_vocab(with_added_tokens=True) if isinstance(tok, Tokenizer) else tok.get_vocab()
    items = sorted(vocab.items(), key=lambda kv: (kv[1], kv[0]))
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode("utf-8")).hexdigest()


def save_tokenizer(tok: Tokenizer, path: str | os.PathLike) -> Path:
    """Write ``tok`` as JSON to ``path`` atomically, so readers never see a half-written file."""
    return write_bytes_atomic(path, tok.to_str(pretty=True).encode("utf-8"))
