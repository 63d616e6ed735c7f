#!/usr/bin/env python
"""Build mixalign's shipped demo corpus: 8 small real-text domains in the Pile's jsonl.zst format.

Maintainer tool, not run by CI. Inputs are Debian packages, the Debian Python 3.11 stdlib and
DeepMind's mathematics_dataset (run in its own virtualenv, since it needs sympy 1.5.1); see
mixalign/assets/demo_corpus/README.md for the exact commands. The same inputs and --seed give
byte-identical shards: sources are read in sorted order, selection and interleaving are seeded,
and zstd runs single-threaded at a fixed level with no timestamps.

    python scripts/build_demo_corpus.py --math-python /tmp/mathvenv/bin/python

Each line of a shard is {"text": ..., "meta": {"pile_set_name": <domain>}}.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT_DEFAULT = REPO / "mixalign" / "assets" / "demo_corpus"
EOT = "<|endoftext|>"

DOMAINS = ("code", "math", "bible", "dictionary", "legal", "docs", "email", "quotes")
CAP_BYTES = 1_500_000  # per domain, UTF-8 bytes of text
MAX_DOC_BYTES = 100_000  # one huge file would otherwise eat a domain's whole budget
MIN_DOC_BYTES = 50
GROUP_MIN_BYTES = 400  # dictionary entries / fortunes are grouped up to at least this
ZSTD_LEVEL = 19
N_SHARDS = 2

STDLIB = Path("/usr/lib/python3.11")
EMAIL_DATA = STDLIB / "test" / "test_email" / "data"
DICTD = Path("/usr/share/dictd")
DICTS = ("gcide", "jargon", "devil", "foldoc")
FORTUNES = Path("/usr/share/games/fortunes")
PYDOC_HTML = Path("/usr/share/doc/python3.11/html")
MAN_PACKAGES = ("manpages", "manpages-dev")


# ---------------------------------------------------------------- decoding helpers


def decode(raw: bytes, stats: Counter) -> str | None:
    """Strict UTF-8 or nothing: undecodable inputs are skipped (and counted), never mangled."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        stats["skipped_undecodable"] += 1
        return None


_OVERSTRIKE = re.compile(r".\x08")


def strip_overstrike(text: str) -> str:
    """Remove nroff bold/underline overstrikes (c BS c, _ BS c) that man leaves in its output."""
    return _OVERSTRIKE.sub("", text)


# ---------------------------------------------------------------- sources (each -> {source: [docs]})


def src_code(stats: Counter) -> dict[str, list[str]]:
    """One document per .py file of the Debian Python 3.11 stdlib (PSF licence)."""
    docs = []
    for path in sorted(STDLIB.rglob("*.py")):
        rel = path.relative_to(STDLIB).as_posix()
        if "-packages/" in rel or not path.is_file():
            continue
        text = decode(path.read_bytes(), stats)
        if text is not None:
            docs.append(text)
    return {"cpython-stdlib": docs}


MATH_DOC_PAIRS = 12


def emit_math(target_bytes: int, seed: int) -> None:
    """Run inside the mathematics_dataset venv: print math documents as JSON lines.

    Modules are visited round-robin in sorted order; each document holds MATH_DOC_PAIRS
    question/answer pairs of one module, one question line then one answer line, as in the
    Pile's DM Mathematics. Samples that crash under this numpy/sympy combination are skipped.
    """
    import numpy as np
    from absl import flags

    flags.FLAGS(["emit-math"])
    import mathematics_dataset.sample.polynomials as mpoly
    from mathematics_dataset import generate

    # sympy 1.5.1's diophantine solver rejects numpy ints that newer numpy hands it.
    _solve = mpoly.diophantine_solve_linear_2d

    def _solve_int(**kw):
        return _solve(**{k: int(v) for k, v in kw.items()})

    mpoly.diophantine_solve_linear_2d = _solve_int

    # expand_entities orders entities via set(...) of objects, i.e. by memory address, which makes
    # output differ run to run. Same logic, but de-duplicated in first-seen order before the shuffle.
    from mathematics_dataset.util import composition

    def _expand_entities(context, **kwargs):
        kwargs = kwargs.copy()
        entities = dict.fromkeys(context.child_entities)
        for key, value in kwargs.items():
            if isinstance(value, composition.Entity):
                entities[value] = None
                kwargs[key] = value.handle
        entities = list(entities)
        random.shuffle(entities)
        parts = []
        for entity in entities:
            parts.append(entity.child_description)
            if not entity.expression_used:
                parts.append(entity.description)
        return " ".join(p for p in parts if p), kwargs

    composition.expand_entities = _expand_entities

    random.seed(seed)
    np.random.seed(seed)
    generate.init_modules()
    mods = [(f"{r}/{n}", m) for r, ms in generate.filtered_modules.items() for n, m in ms.items()]
    total = 0
    failed = Counter()
    while total < target_bytes:
        for name, mod in mods:
            lines = []
            for _ in range(MATH_DOC_PAIRS):
                try:
                    problem, _dropped = generate.sample_from_module(mod)
                except Exception:  # noqa: BLE001 - old sympy on new numpy; skip the sample
                    failed[name] += 1
                    continue
                lines.append(f"{problem.question}\n{problem.answer}\n")
            if lines:
                text = "".join(lines)
                total += len(text.encode("utf-8"))
                print(json.dumps({"module": name, "text": text}), flush=True)
            if total >= target_bytes:
                break
    print(json.dumps({"failed_samples": sum(failed.values()), "failed_modules": sorted(failed)}), file=sys.stderr)


def src_math(stats: Counter, math_python: str, seed: int) -> dict[str, list[str]]:
    env = dict(os.environ, PYTHONHASHSEED="0")
    cmd = [math_python, str(Path(__file__).resolve()), "--emit-math", str(int(CAP_BYTES * 1.05)), "--seed", str(seed)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    docs = [json.loads(line)["text"] for line in res.stdout.splitlines() if line.strip()]
    info = json.loads(res.stderr.strip().splitlines()[-1])
    stats["math_failed_samples"] += info["failed_samples"]
    return {"mathematics_dataset": docs}


_CHAPTER = re.compile(r"^(\S.*) (\d+)$")


def src_bible(stats: Counter) -> dict[str, list[str]]:
    """One document per chapter of the KJV, rendered by the Debian `bible` program."""
    out = subprocess.run(["bible", "-l", "100000", "gen1:1-rev22:21"], capture_output=True, check=True).stdout
    text = decode(out, stats) or ""
    docs, cur = [], []
    for line in text.split("\n"):
        if _CHAPTER.match(line) and not line.startswith(" "):
            if cur:
                docs.append("\n".join(cur).strip("\n") + "\n")
            cur = []
        cur.append(line)
    if cur:
        docs.append("\n".join(cur).strip("\n") + "\n")
    return {"kjv": [d for d in docs if _CHAPTER.match(d.split("\n", 1)[0])]}


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _dictd_num(s: str) -> int:
    """dictd index numbers are base64 digits, most significant first."""
    n = 0
    for ch in s:
        n = n * 64 + _B64.index(ch)
    return n


def group(items: list[str], min_bytes: int, sep: str) -> list[str]:
    """Join consecutive short items until each group reaches min_bytes (natural boundaries kept)."""
    out, cur, size = [], [], 0
    for it in items:
        cur.append(it)
        size += len(it.encode("utf-8"))
        if size >= min_bytes:
            out.append(sep.join(cur))
            cur, size = [], 0
    if cur:
        out.append(sep.join(cur))
    return out


def src_dictionary(stats: Counter) -> dict[str, list[str]]:
    """dictd databases: entries in file order, grouped so most documents exceed ~400 bytes."""
    result = {}
    for name in DICTS:
        body = gzip.decompress((DICTD / f"{name}.dict.dz").read_bytes())  # dictzip is gzip
        spans = set()
        for line in (DICTD / f"{name}.index").read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split("\t")
            if len(parts) < 3 or parts[0].startswith("00-database") or parts[0].startswith("00database"):
                continue
            spans.add((_dictd_num(parts[1]), _dictd_num(parts[2])))
        entries = []
        for off, length in sorted(spans):
            text = decode(body[off : off + length], stats)
            if text is not None and text.strip():
                entries.append(text.strip("\n") + "\n")
        result[f"dict-{name}"] = group(entries, GROUP_MIN_BYTES, "\n")
    return result


def src_legal(stats: Counter) -> dict[str, list[str]]:
    """Licence texts and Debian copyright files, one document per file."""
    paths = sorted(p for p in Path("/usr/share/common-licenses").iterdir() if p.is_file())
    paths += sorted(Path("/usr/share/doc").glob("*/copyright"))
    docs = []
    for p in paths:
        if p.is_file():
            text = decode(p.read_bytes(), stats)
            if text is not None:
                docs.append(text)
    return {"licenses": docs}


class _DocHTML(HTMLParser):
    """Render the main body of a Sphinx HTML page as plain text (blocks -> lines, pre kept)."""

    BLOCK = {"p", "div", "section", "h1", "h2", "h3", "h4", "h5", "h6", "li", "dt", "dd", "tr",
             "table", "ul", "ol", "dl", "blockquote", "pre", "br", "hr", "figure", "caption"}
    SKIP = {"script", "style"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0  # >0 while inside div.body
        self.skip = 0
        self.pre = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if self.depth:
            if tag == "div":
                self.depth += 1
            if tag in self.SKIP:
                self.skip += 1
            if tag == "pre":
                self.pre += 1
            if tag in self.BLOCK:
                self._newline()
            if tag == "li":
                self.parts.append("* ")
        elif tag == "div" and a.get("role") == "main":
            self.depth = 1

    def handle_endtag(self, tag):
        if not self.depth:
            return
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in self.BLOCK:
            self._newline()
        if tag == "div":
            self.depth -= 1

    def _newline(self) -> None:
        if not (self.parts and self.parts[-1] == "* "):  # keep a list bullet on its item's line
            self.parts.append("\n")

    def handle_data(self, data):
        if self.depth and not self.skip:
            self.parts.append(data if self.pre else re.sub(r"\s+", " ", data))

    def text(self) -> str:
        raw = "".join(self.parts).replace("\u00b6", "")  # drop Sphinx's pilcrow permalinks
        lines = [ln.rstrip() if ln.strip() else "" for ln in raw.split("\n")]
        out = re.sub(r"\n{3,}", "\n\n", "\n".join(ln if ln.startswith(" ") else ln.lstrip() for ln in lines))
        return out.strip("\n") + "\n"


def src_docs(stats: Counter) -> dict[str, list[str]]:
    """Python 3.11 HTML docs as plain text, and Linux man-pages rendered by man(1); one per page."""
    py = []
    for p in sorted(PYDOC_HTML.rglob("*.html")):
        rel = p.relative_to(PYDOC_HTML).as_posix()
        if rel.startswith(("_", "genindex", "py-modindex", "search")):
            continue
        raw = decode(p.read_bytes(), stats)
        if raw is None:
            continue
        parser = _DocHTML()
        parser.feed(raw)
        py.append(parser.text())
    listing = subprocess.run(["dpkg", "-L", *MAN_PACKAGES], capture_output=True, text=True, check=True).stdout
    pages = sorted({p for p in listing.split("\n") if re.match(r"^/usr/share/man/man\d/.*\.gz$", p)})
    env = dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat", GROFF_NO_SGR="1", LC_ALL="C.UTF-8")
    man = []
    for p in pages:
        if Path(p).is_symlink() or not Path(p).is_file():
            continue
        res = subprocess.run(["man", "-E", "UTF-8", "--nh", "--nj", "-l", p], capture_output=True, env=env)
        if res.returncode != 0:
            stats["skipped_man_failed"] += 1
            continue
        text = decode(res.stdout, stats)
        if text is not None:
            man.append(strip_overstrike(text))
    return {"python3.11-doc": py, "linux-man-pages": man}


def src_email(stats: Counter) -> dict[str, list[str]]:
    """RFC 822 test messages shipped with CPython's email package tests, one per message."""
    docs = []
    for p in sorted(EMAIL_DATA.glob("msg_*.txt")):
        text = decode(p.read_bytes(), stats)
        if text is not None:
            docs.append(text)
    return {"cpython-email-tests": docs}


def src_quotes(stats: Counter) -> dict[str, list[str]]:
    """fortune(6) databases: consecutive fortunes of one file grouped, '%' lines kept."""
    docs = []
    for p in sorted(FORTUNES.iterdir()):
        if p.suffix in (".dat", ".u8") or p.is_symlink() or not p.is_file():
            continue
        text = decode(p.read_bytes(), stats)
        if text is None:
            continue
        items = [f.strip("\n") + "\n" for f in re.split(r"^%\n", text, flags=re.M) if f.strip()]
        docs += group(items, GROUP_MIN_BYTES, "%\n")
    return {"fortunes": docs}


# ---------------------------------------------------------------- selection and writing


def select(sources: dict[str, list[str]], cap: int, rng: random.Random) -> list[str]:
    """Seeded choice of whole documents up to `cap` bytes, sources sharing the budget fairly.

    Smaller sources go first and hand their unused share on, so e.g. the small Devil's
    Dictionary is kept whole while GCIDE fills the rest.
    """
    sizes = {k: sum(len(d.encode("utf-8")) for d in v) for k, v in sources.items()}
    order = sorted(sources, key=lambda k: (sizes[k], k))
    chosen, left = [], cap
    for i, key in enumerate(order):
        quota = left // (len(order) - i)
        docs = list(sources[key])
        rng.shuffle(docs)
        used = 0
        for d in docs:
            n = len(d.encode("utf-8"))
            if used + n <= quota:
                chosen.append(d)
                used += n
        left -= used
    return chosen


def build(out: Path, seed: int, math_python: str) -> dict:
    import zstandard

    seen: set[str] = set()
    records: list[tuple[str, str]] = []
    stats: dict[str, dict] = {}
    for domain in DOMAINS:
        st: Counter = Counter()
        fn = globals()[f"src_{domain}"]
        sources = fn(st, math_python, seed) if domain == "math" else fn(st)
        clean: dict[str, list[str]] = {}
        for key, docs in sources.items():
            kept = []
            for d in docs:
                n = len(d.encode("utf-8"))
                if not d.strip() or n < MIN_DOC_BYTES:
                    st["skipped_too_short"] += 1
                elif n > MAX_DOC_BYTES:
                    st["skipped_too_long"] += 1
                elif EOT in d:
                    st["skipped_contains_eot"] += 1
                elif d in seen:
                    st["skipped_duplicate"] += 1
                else:
                    seen.add(d)
                    kept.append(d)
            st["candidates"] += len(kept)
            clean[key] = kept
        chosen = select(clean, CAP_BYTES, random.Random(f"{seed}:{domain}"))
        if not chosen:
            raise SystemExit(f"domain {domain!r} came out empty")
        records += [(domain, d) for d in chosen]
        stats[domain] = {
            "documents": len(chosen),
            "bytes": sum(len(d.encode("utf-8")) for d in chosen),
            "sources": {k: len(v) for k, v in clean.items()},
            **{k: v for k, v in sorted(st.items())},
        }
        print(f"{domain:11s} {stats[domain]['documents']:6d} docs {stats[domain]['bytes']:9d} bytes  {dict(st)}", flush=True)

    random.Random(f"{seed}:interleave").shuffle(records)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.jsonl.zst"):
        old.unlink()
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=0, write_checksum=True)
    per = -(-len(records) // N_SHARDS)
    shard_sizes = {}
    for i in range(N_SHARDS):
        chunk = records[i * per : (i + 1) * per]
        body = "".join(
            json.dumps({"text": t, "meta": {"pile_set_name": d}}, ensure_ascii=False) + "\n" for d, t in chunk
        ).encode("utf-8")
        name = f"{i:02d}.jsonl.zst"
        data = cctx.compress(body)
        tmp = out / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, out / name)
        shard_sizes[name] = {"documents": len(chunk), "compressed_bytes": len(data)}
    summary = {
        "seed": seed,
        "zstd_level": ZSTD_LEVEL,
        "cap_bytes_per_domain": CAP_BYTES,
        "max_doc_bytes": MAX_DOC_BYTES,
        "shards": shard_sizes,
        "domains": stats,
    }
    # Token counts are filled in by scripts/train_demo_tokenizer.py; keep them if present.
    stats_path = out / "stats.json"
    if stats_path.exists():
        old = json.loads(stats_path.read_text())
        for dom, st in old.get("domains", {}).items():
            if dom in stats and st.get("documents") == stats[dom]["documents"] and st.get("bytes") == stats[dom]["bytes"]:
                stats[dom].update({k: v for k, v in st.items() if k.startswith("tokens_")})
    stats_path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    total = sum(s["compressed_bytes"] for s in shard_sizes.values())
    print(f"total {len(records)} documents, {total} bytes compressed in {N_SHARDS} shards -> {out}")
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT_DEFAULT)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--math-python", default="/tmp/mathvenv/bin/python",
                    help="python of a venv with mathematics-dataset==1.0.1 and sympy==1.5.1")
    ap.add_argument("--emit-math", type=int, metavar="BYTES", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.emit_math is not None:
        emit_math(args.emit_math, args.seed)
        return
    build(args.out, args.seed, args.math_python)


if __name__ == "__main__":
    main()
