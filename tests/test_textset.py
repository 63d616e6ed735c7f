import json
import random

import numpy as np
import pytest
import zstandard
from helpers import write_corpus
from hypothesis import given, settings
from hypothesis import strategies as st

from mixalign.data.prepare import is_heldout
from mixalign.data.reader import read_documents
from mixalign.errors import DataError
from mixalign.llvec.textset import (
    TextSet,
    build_textset,
    load_textset,
    resolve_textset,
    save_textset,
    utf8_chunks,
)

SPLIT = dict(split_seed=7, val_fraction=0.5)


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory):
    # ~100 held-out documents per domain at val_fraction 0.5, most of them one candidate chunk
    return write_corpus(tmp_path_factory.mktemp("ts_corpus") / "00.jsonl", documents_per_domain=200, seed=3)


# ---------------------------------------------------------------- chunking


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.integers(min_value=4, max_value=40))
def test_utf8_chunks_round_trip_and_limits(text, max_bytes):
    chunks = utf8_chunks(text, max_bytes)
    assert "".join(chunks) == text
    assert all(0 < len(c.encode("utf-8")) <= max_bytes for c in chunks)
    # greedy: a chunk stops early only because the next character would not fit
    for c, nxt in zip(chunks, chunks[1:]):
        assert len(c.encode("utf-8")) + len(nxt[0].encode("utf-8")) > max_bytes


def test_utf8_chunks_never_split_characters():
    text = "a€😀é" * 50  # 1-, 3-, 4- and 2-byte characters
    for max_bytes in range(4, 20):
        for c in utf8_chunks(text, max_bytes):
            c.encode("utf-8")  # every chunk is whole characters (a split would be a lone surrogate / error)
        assert "".join(utf8_chunks(text, max_bytes)) == text
    assert utf8_chunks("", 8) == []
    with pytest.raises(ValueError, match="max_bytes"):
        utf8_chunks("abc", 3)


# ---------------------------------------------------------------- TextSet


def test_textset_properties_and_unambiguous_hash():
    ts = TextSet(("héllo", "ab"), ("x", "y"), {})
    assert ts.n_bytes.dtype == np.int64 and ts.n_bytes.tolist() == [6, 2]
    assert ts.mean_bytes == 4.0
    assert ts.domain_names == ["x", "y"]
    assert len(ts.hash) == 64
    # moving bytes between fields or between texts changes the hash
    assert TextSet(("ab",), ("c",)).hash != TextSet(("b",), ("ca",)).hash
    assert TextSet(("ab", "c"), ("d", "d")).hash != TextSet(("a", "bc"), ("d", "d")).hash
    assert TextSet(("a", "b"), ("d", "d")).hash != TextSet(("b", "a"), ("d", "d")).hash  # order matters
    assert TextSet(("a",), ("d",), {"n": 1}).hash == TextSet(("a",), ("d",), {"other": 2}).hash  # meta does not
    with pytest.raises(ValueError):
        TextSet(("a",), ())


# ---------------------------------------------------------------- building


def test_build_keeps_only_heldout_chunks_of_the_right_size(big_corpus):
    ts = build_textset(big_corpus, n=60, seed=0, **SPLIT)
    assert len(ts) == 60
    held = [d.text for d in read_documents(big_corpus) if is_heldout(d.text, 7, 0.5)]
    train = [d.text for d in read_documents(big_corpus) if not is_heldout(d.text, 7, 0.5)]
    for text in ts.texts:
        assert 256 < len(text.encode("utf-8")) <= 1024
        assert any(text in h for h in held)
        assert not any(text in t for t in train)
    assert list(zip(ts.domains, range(60))) == sorted(zip(ts.domains, range(60)))  # grouped by domain
    assert ts.meta["split"] == {"seed": 7, "val_fraction": 0.5}
    assert ts.meta["n"] == 60 and ts.meta["seed"] == 0 and ts.meta["stratified"] is False
    assert ts.meta["max_bytes"] == 1024 and ts.meta["min_bytes"] == 256


def test_build_is_deterministic_and_seeded(big_corpus):
    a = build_textset(big_corpus, n=40, seed=1, **SPLIT)
    b = build_textset(big_corpus, n=40, seed=1, **SPLIT)
    c = build_textset(big_corpus, n=40, seed=2, **SPLIT)
    assert a.hash == b.hash and a.texts == b.texts
    assert a.hash != c.hash
    assert len(set(a.texts)) == 40  # without replacement


def test_build_stratified_and_domain_filter(big_corpus):
    ts = build_textset(big_corpus, n=90, seed=0, stratify=True, **SPLIT)
    assert ts.domain_counts() == {"alpha": 30, "beta": 30, "gamma": 30}
    ts = build_textset(big_corpus, n=31, seed=0, stratify=True, **SPLIT)
    assert sorted(ts.domain_counts().values()) == [10, 10, 11]
    only = build_textset(big_corpus, n=10, seed=0, domains=["beta"], **SPLIT)
    assert set(only.domains) == {"beta"}
    with pytest.raises(DataError, match="delta"):
        build_textset(big_corpus, n=10, seed=0, domains=["delta"], **SPLIT)


def test_stratified_gives_scarce_domains_all_they_have(tmp_path):
    lines = []
    rng = random.Random(0)
    for domain, count in (("rare", 40), ("common", 400)):
        for i in range(count):
            text = f"{domain} {i} " + " ".join(rng.choice(["lorem", "ipsum", "dolor"]) for _ in range(80))
            lines.append(json.dumps({"text": text, "meta": {"pile_set_name": domain}}))
    src = tmp_path / "c.jsonl"
    src.write_text("\n".join(lines) + "\n")
    n_rare = build_textset(src, n=1, seed=0, domains=["rare"], **SPLIT).meta["available"]["rare"]
    ts = build_textset(src, n=100, seed=0, stratify=True, **SPLIT)
    assert ts.domain_counts() == {"common": 100 - n_rare, "rare": n_rare}


def test_build_errors(big_corpus):
    total = sum(build_textset(big_corpus, n=1, seed=0, **SPLIT).meta["available"].values())
    with pytest.raises(DataError, match=rf"n = {total + 1}.*only {total} chunks"):
        build_textset(big_corpus, n=total + 1, seed=0, **SPLIT)
    assert len(build_textset(big_corpus, n=total, seed=0, **SPLIT)) == total
    for n in (0, -3):
        with pytest.raises(DataError, match="zero texts"):
            build_textset(big_corpus, n=n, seed=0, **SPLIT)


# ---------------------------------------------------------------- files


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.zst"])
def test_save_load_round_trip(tmp_path, suffix):
    ts = TextSet(("line\nbreak \u2028 sep", "plain é 😀", "\r\n"), ("b", "a", "a"), {"n": 3, "split": {"seed": 1}})
    path = save_textset(ts, tmp_path / f"set{suffix}")
    back = load_textset(path)
    assert back.texts == ts.texts and back.domains == ts.domains and back.meta == ts.meta
    assert back.hash == ts.hash
    assert [p.name for p in tmp_path.iterdir()] == [f"set{suffix}"]  # no temp files left
    if suffix.endswith(".zst"):
        raw = zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read()
    else:
        raw = path.read_bytes()
    header = json.loads(raw.split(b"\n")[0])
    assert header["format"] == "mixalign-textset" and header["version"] == 1 and header["hash"] == ts.hash


def test_load_rejects_tampering_and_foreign_files(tmp_path):
    ts = TextSet(("one text", "two text"), ("a", "b"), {})
    path = save_textset(ts, tmp_path / "set.jsonl")
    path.write_text(path.read_text().replace("two text", "too text"))
    with pytest.raises(DataError, match=rf"{path.name}.*hash mismatch"):
        load_textset(path)
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")  # drop a line
    with pytest.raises(DataError, match="set.jsonl"):
        load_textset(path)
    other = tmp_path / "corpus.jsonl"
    other.write_text(json.dumps({"text": "x", "meta": {"pile_set_name": "d"}}) + "\n")
    with pytest.raises(DataError, match="corpus.jsonl.*not a mixalign text set"):
        load_textset(other)
    with pytest.raises(DataError, match="no such file"):
        load_textset(tmp_path / "missing.jsonl")
    zst = save_textset(ts, tmp_path / "set.jsonl.zst")
    zst.write_bytes(zst.read_bytes()[:-10])
    with pytest.raises(DataError, match="set.jsonl.zst"):
        load_textset(zst)
    with pytest.raises(DataError, match=".jsonl"):
        save_textset(ts, tmp_path / "set.txt")


def test_resolve_demo_textset():
    try:
        path = resolve_textset("demo")
    except DataError:
        pytest.skip("shipped demo text set not built yet")
    ts = load_textset("demo")
    assert path.name == "demo.jsonl.zst"
    assert len(ts) == ts.meta["n"] and ts.meta["stratified"] is True
    assert ts.meta["split"] == {"seed": 1337, "val_fraction": 0.1}
