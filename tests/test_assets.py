"""The shipped demo corpus and tokenizers: present, well-formed, consistent with their stats, findable."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from mixalign.assets import DEMO_CORPUS, SHIPPED_TOKENIZERS, asset_path, demo_corpus_dir
from mixalign.data.reader import read_documents
from mixalign.data.tokenizer import EOT, eot_id, load_tokenizer

REPO = Path(__file__).resolve().parents[1]
DOMAINS = ("code", "math", "bible", "dictionary", "legal", "docs", "email", "quotes")


@pytest.fixture(scope="module")
def stats() -> dict:
    return json.loads((demo_corpus_dir() / "stats.json").read_text())


@pytest.fixture(scope="module")
def documents():
    return list(read_documents(DEMO_CORPUS))


def test_shards_are_pile_format():
    import zstandard

    shards = sorted(demo_corpus_dir().glob("*.jsonl.zst"))
    assert [s.name for s in shards] == ["00.jsonl.zst", "01.jsonl.zst"]
    for shard in shards:
        with zstandard.ZstdDecompressor().stream_reader(shard.open("rb")) as raw:
            for n, line in enumerate(io.BufferedReader(raw), 1):
                rec = json.loads(line.decode("utf-8"))  # strict UTF-8
                assert set(rec) == {"text", "meta"}, (shard.name, n)
                assert set(rec["meta"]) == {"pile_set_name"}, (shard.name, n)
                assert rec["meta"]["pile_set_name"] in DOMAINS, (shard.name, n)
                assert isinstance(rec["text"], str) and rec["text"].strip(), (shard.name, n)


def test_corpus_matches_stats(documents, stats):
    assert set(stats["domains"]) == set(DOMAINS)
    counts = Counter(d.domain for d in documents)
    sizes = Counter()
    for d in documents:
        sizes[d.domain] += len(d.text.encode("utf-8"))
    for dom in DOMAINS:
        assert counts[dom] > 0, dom
        assert counts[dom] == stats["domains"][dom]["documents"], dom
        assert sizes[dom] == stats["domains"][dom]["bytes"], dom
        assert sizes[dom] <= stats["cap_bytes_per_domain"], dom


def test_corpus_interleaved(documents):
    # a seeded shuffle, like the Pile: every shard mixes all domains, no long single-domain runs
    shards = sorted({d.path for d in documents})
    assert shards == sorted(str(p.resolve()) for p in demo_corpus_dir().glob("*.jsonl.zst"))
    for shard in shards:
        assert {d.domain for d in documents if d.path == shard} == set(DOMAINS), shard
    run = longest = 1
    for prev, cur in zip(documents, documents[1:]):
        run = run + 1 if cur.domain == prev.domain else 1
        longest = max(longest, run)
    assert longest < 25


def test_no_duplicates_or_eot(documents):
    texts = [d.text for d in documents]
    assert len(set(texts)) == len(texts)
    assert not any(EOT in t for t in texts)


def test_compressed_size_small():
    total = sum(p.stat().st_size for p in demo_corpus_dir().glob("*.jsonl.zst"))
    assert total < 6_500_000


def test_readme_documents_every_domain(stats):
    readme = (demo_corpus_dir() / "README.md").read_text()
    for dom, st in stats["domains"].items():
        assert f"| {dom} | {st['documents']:,} | {st['bytes']:,} |" in readme, dom


def test_gpt2_known_encodings():
    tok = load_tokenizer("gpt2")
    assert tok.get_vocab_size() == 50257
    assert eot_id(tok) == 50256 == tok.token_to_id(EOT)
    assert tok.encode("Hello world!").ids == [15496, 995, 0]
    assert tok.encode("\n\n").ids == [628]
    assert tok.encode(" the").ids == [262]
    assert tok.decode([15496, 995, 0]) == "Hello world!"


def test_demo_tokenizer_size():
    tok = load_tokenizer("demo-4k")
    assert tok.get_vocab_size() == 4096
    assert eot_id(tok) == 0


@pytest.mark.parametrize("name", SHIPPED_TOKENIZERS)
def test_round_trip_every_demo_document(name, documents, stats):
    tok = load_tokenizer(name)
    texts = [d.text for d in documents]
    total = Counter()
    for i in range(0, len(texts), 512):
        batch = texts[i : i + 512]
        encs = tok.encode_batch(batch)
        decoded = tok.decode_batch([e.ids for e in encs])
        for doc, enc, text, back in zip(documents[i : i + 512], encs, batch, decoded):
            assert back == text, (doc.path, doc.line)
            total[doc.domain] += len(enc.ids)
    for dom in DOMAINS:
        assert total[dom] == stats["domains"][dom][f"tokens_{name}"], dom


def test_installed_wheel_finds_assets(tmp_path):
    """Build a wheel from a copy of the project, unpack it, and look the assets up from there."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".*.tmp")
    shutil.copytree(REPO / "mixalign", src / "mixalign", ignore=ignore)
    shutil.copy2(REPO / "pyproject.toml", src / "pyproject.toml")
    if (REPO / "README.md").exists():
        shutil.copy2(REPO / "README.md", src / "README.md")
    else:
        (src / "README.md").write_text("mixalign\n")
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(wheels), str(src)],
        check=True, cwd=tmp_path, capture_output=True,
    )
    (wheel,) = wheels.glob("mixalign-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)

    probe = (
        "import json, sys\n"
        "from mixalign.assets import asset_path, demo_corpus_dir, SHIPPED_TOKENIZERS\n"
        "paths = [str(asset_path('tokenizers', n, 'tokenizer.json')) for n in SHIPPED_TOKENIZERS]\n"
        "paths += [str(p) for p in sorted(demo_corpus_dir().glob('*.jsonl.zst'))]\n"
        "paths += [str(demo_corpus_dir() / 'stats.json')]\n"
        "print(json.dumps(paths))\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=elsewhere, env=env,
        capture_output=True, text=True, check=True,
    ).stdout
    paths = [Path(p) for p in json.loads(out)]
    assert len(paths) == len(SHIPPED_TOKENIZERS) + 2 + 1
    for p in paths:
        assert p.is_file(), p
        assert p.resolve().is_relative_to(site.resolve()), p
    # the shipped files are byte-identical to the checkout's
    for p in paths:
        rel = p.resolve().relative_to(site.resolve())
        assert p.read_bytes() == (REPO / rel).read_bytes(), rel
    assert asset_path("tokenizers").is_dir()
