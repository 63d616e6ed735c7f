#!/usr/bin/env python
"""Train the shipped `demo-4k` tokenizer on the demo corpus and record per-domain token counts.

Maintainer tool, run after scripts/build_demo_corpus.py:

    python scripts/train_demo_tokenizer.py

Writes mixalign/assets/tokenizers/demo-4k/tokenizer.json, adds tokens_<name> counts for each
shipped tokenizer to mixalign/assets/demo_corpus/stats.json, and regenerates the stats table
in mixalign/assets/demo_corpus/README.md (between the STATS markers).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mixalign.assets import SHIPPED_TOKENIZERS, asset_path, demo_corpus_dir  # noqa: E402
from mixalign.data.tokenizer import load_tokenizer, save_tokenizer, train_bpe  # noqa: E402

VOCAB_SIZE = 4096
BEGIN, END = "<!-- STATS:BEGIN -->", "<!-- STATS:END -->"


def read_corpus(corpus: Path) -> list[tuple[str, str]]:
    """(domain, text) for every document, in shard order."""
    import zstandard

    out = []
    for shard in sorted(corpus.glob("*.jsonl.zst")):
        with zstandard.ZstdDecompressor().stream_reader(shard.open("rb")) as raw:
            for line in io.TextIOWrapper(raw, encoding="utf-8"):
                rec = json.loads(line)
                out.append((rec["meta"]["pile_set_name"], rec["text"]))
    return out


def table(stats: dict) -> str:
    names = list(SHIPPED_TOKENIZERS)
    head = "| domain | documents | bytes | " + " | ".join(f"tokens ({n}) | bytes/token ({n})" for n in names) + " |"
    rows = [head, "|" + "---|" * (3 + 2 * len(names))]
    tot = {"documents": 0, "bytes": 0, **{n: 0 for n in names}}
    for dom, st in stats["domains"].items():
        cells = [dom, f"{st['documents']:,}", f"{st['bytes']:,}"]
        tot["documents"] += st["documents"]
        tot["bytes"] += st["bytes"]
        for n in names:
            t = st[f"tokens_{n}"]
            tot[n] += t
            cells += [f"{t:,}", f"{st['bytes'] / t:.2f}"]
        rows.append("| " + " | ".join(cells) + " |")
    cells = ["**total**", f"{tot['documents']:,}", f"{tot['bytes']:,}"]
    for n in names:
        cells += [f"{tot[n]:,}", f"{tot['bytes'] / tot[n]:.2f}"]
    rows.append("| " + " | ".join(cells) + " |")
    shards = stats["shards"]
    packed = sum(s["compressed_bytes"] for s in shards.values())
    rows += ["", f"Compressed: {packed:,} bytes in {len(shards)} shards ({', '.join(sorted(shards))})."]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=demo_corpus_dir())
    args = ap.parse_args(argv)

    docs = read_corpus(args.corpus)
    tok = train_bpe((t for _, t in docs), VOCAB_SIZE)
    path = save_tokenizer(tok, asset_path("tokenizers", "demo-4k", "tokenizer.json"))
    print(f"wrote {path} ({tok.get_vocab_size()} tokens)")

    stats_path = args.corpus / "stats.json"
    stats = json.loads(stats_path.read_text())
    for name in SHIPPED_TOKENIZERS:
        t = load_tokenizer(name)
        counts: dict[str, int] = {}
        texts = [x for _, x in docs]
        for i in range(0, len(texts), 256):
            for (dom, _), enc in zip(docs[i : i + 256], t.encode_batch(texts[i : i + 256])):
                counts[dom] = counts.get(dom, 0) + len(enc.ids)
        for dom, n in counts.items():
            stats["domains"][dom][f"tokens_{name}"] = n
    stats_path.write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")

    md = table(stats)
    print(md)
    readme = args.corpus / "README.md"
    if readme.exists():
        text = readme.read_text()
        if BEGIN in text and END in text:
            pre, rest = text.split(BEGIN, 1)
            _, post = rest.split(END, 1)
            readme.write_text(f"{pre}{BEGIN}\n{md}\n{END}{post}")


if __name__ == "__main__":
    main()
