#!/usr/bin/env python
"""Rebuild mixalign's shipped default text set, mixalign/assets/textsets/demo.jsonl.zst, and its README.

Maintainer tool. The text set is a pure function of the shipped demo corpus and the arguments
below, so running this again on the same corpus gives a byte-identical file with the same hash.
Rebuild it (and re-score any saved vectors) whenever the demo corpus changes.

    python scripts/build_textset.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mixalign.llvec.textset import build_textset, load_textset, save_textset

REPO = Path(__file__).resolve().parents[1]
OUT_DEFAULT = REPO / "mixalign" / "assets" / "textsets"

# The protocol. split_seed / val_fraction are the project configs' data.seed / data.val_fraction,
# so the texts come only from documents that training never sees. N = 2000 was asked for, but the
# demo corpus has only ~1236 held-out chunks at these settings: 1000 is the largest round number.
ARGS = dict(source="demo", n=1000, seed=0, split_seed=1337, val_fraction=0.1, stratify=True, max_bytes=1024, min_bytes=256)


def readme(ts, path: Path) -> str:
    counts = ts.domain_counts()
    available = ts.meta.get("available", {})
    rows = "\n".join(f"| {d} | {counts[d]} | {available.get(d, '?')} | {ts.n_bytes[[x == d for x in ts.domains]].mean():.1f} |" for d in counts)
    return f"""# Shipped text sets

`{path.name}` is the default text set (`"demo"`) that log-likelihood vectors are measured on
(SPEC section 2). Rebuild it with `python scripts/build_textset.py`; the result is a pure
function of the shipped demo corpus and the arguments below.

## Protocol

- Source: the shipped demo corpus (`mixalign/assets/demo_corpus/`).
- Only documents held out of training: `is_heldout(text, split_seed={ARGS['split_seed']}, val_fraction={ARGS['val_fraction']})`
  (the project configs' `data.seed` and `data.val_fraction`).
- Each document is cut into consecutive UTF-8-safe chunks of at most {ARGS['max_bytes']} bytes (no character
  is split); chunks longer than {ARGS['min_bytes']} bytes are candidates.
- N = {len(ts)} chunks drawn without replacement with `numpy.random.default_rng({ARGS['seed']})`, stratified by
  domain (as equal per domain as availability allows; scarce domains give all they have).
  N = 2000 was the target, but only {sum(available.values())} candidates exist at these settings.
- Order: sorted by (domain, position in the corpus).

## Numbers

- N = {len(ts)} texts, B = {ts.mean_bytes:.1f} mean UTF-8 bytes per text.
- Hash (sha256 over the ordered (domain, text) pairs, see `mixalign/llvec/textset.py`):
  `{ts.hash}`

| domain | texts | candidates | mean bytes |
|---|---|---|---|
{rows}

## Format

`.jsonl.zst`: a header line `{{"format": "mixalign-textset", "version": 1, "hash": ..., "n": ..., "meta": ...}}`,
then one `{{"text": ..., "domain": ...}}` per line. `load_textset` verifies the hash.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DEFAULT, help="output directory")
    args = parser.parse_args()
    ts = build_textset(**ARGS)
    path = save_textset(ts, args.out / "demo.jsonl.zst")
    assert load_textset(path).hash == ts.hash
    (args.out / "README.md").write_text(readme(ts, path))
    print(f"{path}: N = {len(ts)}, B = {ts.mean_bytes:.1f} bytes, hash {ts.hash}")
    print(ts.domain_counts())


if __name__ == "__main__":
    main()
