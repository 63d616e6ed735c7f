"""Reader, weights, preparation and the mixture sampler (no Lightning trainer involved)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from mixalign.data.datamodule import PileMixtureDataModule
from mixalign.data.prepare import PrepareConfig, is_heldout, pieces, prepare
from mixalign.data.reader import read_documents
from mixalign.data.sampling import BatchIndices, FixedWindows, MixtureBatches
from mixalign.data.weights import resolve_weights
from mixalign.errors import DataError


def _config(source, **overrides):
    base = dict(source=str(source), tokenizer=None, bpe_vocab_size=300, domains=None,
                val_fraction=0.1, split_seed=1, skip_malformed=False)
    return PrepareConfig(**{**base, **overrides})


# -- reader ----------------------------------------------------------------------------------------
def test_jsonl_and_zst_give_identical_documents(corpus, tmp_path):
    zst = tmp_path / "00.jsonl.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(corpus.read_bytes()))
    plain = [(d.text, d.domain, d.line) for d in read_documents(str(corpus))]
    packed = [(d.text, d.domain, d.line) for d in read_documents(str(zst))]
    assert plain == packed and len(plain) == 180


def test_directory_and_glob_sources(corpus):
    by_dir = list(read_documents(str(corpus.parent)))
    by_glob = list(read_documents(str(corpus.parent / "*.jsonl")))
    assert len(by_dir) == len(by_glob) == 180


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "malformed JSON"),
        ('{"meta": {"pile_set_name": "a"}}', "missing string field 'text'"),
        ('{"text": "hi", "meta": {}}', "missing string field 'meta.pile_set_name'"),
        ('[1, 2]', "expected a JSON object"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, line, message):
    shard = tmp_path / "bad.jsonl"
    good = json.dumps({"text": "fine", "meta": {"pile_set_name": "a"}})
    shard.write_text(f"{good}\n{good}\n{line}\n{good}\n")
    with pytest.raises(DataError, match=rf"bad\.jsonl:3: {message}"):
        list(read_documents(str(shard)))


def test_skip_malformed_counts_and_keeps_the_rest(tmp_path):
    from mixalign.data.reader import ReadStats

    shard = tmp_path / "bad.jsonl"
    good = json.dumps({"text": "fine", "meta": {"pile_set_name": "a"}})
    shard.write_bytes(f"{good}\n{{oops\n".encode() + b'{"text": "\xff"}\n' + f"{good}\n".encode())
    stats = ReadStats()
    docs = list(read_documents(str(shard), skip_malformed=True, stats=stats))
    assert [d.line for d in docs] == [1, 4]
    assert stats.malformed == 2 and "bad.jsonl:3" in stats.examples[1]


def test_missing_source_and_empty_shard(tmp_path):
    with pytest.raises(DataError, match="no such file or directory"):
        list(read_documents(str(tmp_path / "nope")))
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="empty.jsonl: no documents"):
        list(read_documents(str(tmp_path / "empty.jsonl")))


def test_hf_saved_dataset_and_parquet(corpus, tmp_path):
    import datasets

    rows = [json.loads(line) for line in corpus.read_text().splitlines()]
    ds = datasets.Dataset.from_list(rows)
    ds.save_to_disk(str(tmp_path / "saved"))
    ds.to_parquet(str(tmp_path / "rows.parquet"))
    expected = [(r["text"], r["meta"]["pile_set_name"]) for r in rows]
    assert [(d.text, d.domain) for d in read_documents(str(tmp_path / "saved"))] == expected
    assert [(d.text, d.domain) for d in read_documents(str(tmp_path / "rows.parquet"))] == expected


# -- weights ---------------------------------------------------------------------------------------
def test_weight_specs(tmp_path):
    domains = ["a", "b", "c"]
    assert np.allclose(resolve_weights("uniform", domains, [1, 1, 1]), 1 / 3)
    assert np.allclose(resolve_weights("natural", domains, [1, 1, 2]), [0.25, 0.25, 0.5])
    assert np.allclose(resolve_weights({"a": 3, "c": 1}, domains, [1, 1, 1]), [0.75, 0, 0.25])
    file = tmp_path / "w.yaml"
    file.write_text("weights:\n  b: 2\n  c: 2\ndiagnostics: {cosine: 0.5}\n")
    assert np.allclose(resolve_weights(str(file), domains, [1, 1, 1]), [0, 0.5, 0.5])


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"a": -1, "b": 1}, "weight of 'a' is negative"),
        ({"a": 0, "b": 0}, "all weights are zero"),
        ({"zzz": 1}, r"unknown domain\(s\) \['zzz'\]; known domains: \['a', 'b', 'c'\]"),
        ({"a": float("nan")}, "must be a finite number"),
        ("weird", "neither 'uniform', 'natural'"),
    ],
)
def test_bad_weights(spec, message):
    with pytest.raises(DataError, match=message):
        resolve_weights(spec, ["a", "b", "c"], [1, 1, 1])


def test_weights_file_that_is_not_yaml(tmp_path):
    file = tmp_path / "w.yaml"
    file.write_text("a: [1, 2\n")
    with pytest.raises(DataError, match=r"w.yaml is not valid YAML"):
        resolve_weights(str(file), ["a"], [1])


# -- preparation -----------------------------------------------------------------------------------
def test_prepare_writes_manifest_and_token_files(corpus, tmp_path):
    data = prepare(_config(corpus), tmp_path)
    manifest = data.manifest
    assert data.domains == ["alpha", "beta", "gamma"]
    assert manifest["tokenizer"]["vocab_size"] == 300 and manifest["dtype"] == "uint16"
    eot = manifest["tokenizer"]["eot_id"]
    total_docs = 0
    for domain in data.domains:
        for split in ("train", "val"):
            tokens = data.tokens(domain, split)
            assert len(tokens) == data.count(domain, split) > 0
            assert int((tokens == eot).sum()) == data.count(domain, split, "documents")
            total_docs += data.count(domain, split, "documents")
    assert total_docs == 180
    assert len(manifest["inputs"][0]["sha256"]) == 64


def test_split_is_by_document_hash(corpus, tmp_path):
    data = prepare(_config(corpus), tmp_path)
    docs = list(read_documents(str(corpus)))
    held = sum(is_heldout(d.text, 1, 0.1) for d in docs)
    assert held == sum(data.count(d, "val", "documents") for d in data.domains)
    assert 5 < held < 40


def test_prepare_reuses_cache_and_rebuilds_when_damaged(corpus, tmp_path):
    first = prepare(_config(corpus), tmp_path)
    mtime = (first.root / "manifest.json").stat().st_mtime_ns
    again = prepare(_config(corpus), tmp_path)
    assert again.root == first.root and (again.root / "manifest.json").stat().st_mtime_ns == mtime
    token_file = next(first.root.glob("*.train.bin"))
    token_file.write_bytes(token_file.read_bytes()[:-2])  # truncated: must not be trusted
    rebuilt = prepare(_config(corpus), tmp_path)
    assert rebuilt.count("alpha", "train") == first.count("alpha", "train")
    assert all(len(rebuilt.tokens(d, "train")) == rebuilt.count(d, "train") for d in rebuilt.domains)
    assert not list(tmp_path.glob(".*"))  # no temporary directories left behind


def test_unknown_domain_lists_known_ones(corpus, tmp_path):
    with pytest.raises(DataError, match=r"unknown domain\(s\) \['delta'\]; the data has: \['alpha', 'beta', 'gamma'\]"):
        prepare(_config(corpus, domains=("alpha", "delta")), tmp_path)
    assert not list(tmp_path.iterdir()) or not any(p.name[0] != "." for p in tmp_path.iterdir())


def test_parallel_preparation_matches_sequential(corpus, tmp_path):
    second = tmp_path / "in" / "01.jsonl"
    second.parent.mkdir()
    second.write_text(corpus.read_text())
    (tmp_path / "in" / "00.jsonl").write_text(corpus.read_text().replace("cat", "cow"))
    seq = prepare(_config(tmp_path / "in"), tmp_path / "seq", num_proc=1)
    par = prepare(_config(tmp_path / "in"), tmp_path / "par", num_proc=2)
    for domain in seq.domains:
        assert np.array_equal(seq.tokens(domain, "train"), par.tokens(domain, "train"))


# -- sampling --------------------------------------------------------------------------------------
def _batches(weights, seed=0, rank=0, batch_size=50, lengths=(1000, 1000, 1000, 1000)):
    arrays = [np.full(n, i, dtype=np.uint16) for i, n in enumerate(lengths)]
    return MixtureBatches(lambda: arrays, lengths, np.asarray(weights), 8, batch_size, seed, rank)


def test_sampler_frequencies_match_weights():
    weights = np.array([0.5, 0.3, 0.2, 0.0])
    sampler = _batches(weights)
    domains = np.concatenate([sampler.draw(i)[0] for i in range(400)])  # 20,000 draws
    counts = np.bincount(domains, minlength=4)
    assert counts[3] == 0  # a zero-weight domain is never drawn
    assert chisquare(counts[:3], weights[:3] * counts.sum()).pvalue > 0.001


def test_sampler_windows_come_from_their_domain_and_fit():
    batch = _batches([0.25] * 4, lengths=(9, 50, 1000, 20)).batch(3)
    assert (batch["input"] == batch["domain"][:, None]).all()
    assert batch["input"].shape == (50, 8) and batch["target"].shape == (50, 8)


def test_sampler_is_deterministic_and_rank_dependent():
    a, b = _batches([0.25] * 4, seed=7), _batches([0.25] * 4, seed=7)
    other_rank = _batches([0.25] * 4, seed=7, rank=1)
    assert all(np.array_equal(a.draw(i)[1], b.draw(i)[1]) for i in range(5))
    assert not np.array_equal(a.draw(0)[1], other_rank.draw(0)[1])
    assert next(iter(BatchIndices(start=3)))["index"].item() == 3  # a resumed loader asks for batch 3 next
    assert np.array_equal(_batches([0.25] * 4, seed=7).batch(3)["domain"], a.batch(3)["domain"])


def test_fixed_windows_are_evenly_spaced():
    arrays = [np.arange(100, dtype=np.uint16), np.arange(5, dtype=np.uint16)]
    windows = FixedWindows(arrays, block_size=9, windows_per_domain=4)
    assert windows.items == [(0, 0), (0, 20), (0, 40), (0, 60)]
    item = windows[1]
    assert item["input"].tolist() == list(range(20, 29)) and item["target"].tolist() == list(range(21, 30))


def test_datamodule_rejects_domain_smaller_than_a_window(corpus, tmp_path):
    dm = PileMixtureDataModule(source=str(corpus), tokenizer=None, bpe_vocab_size=300,
                               block_size=100_000, cache_dir=str(tmp_path))
    with pytest.raises(DataError, match=r"domain 'alpha' has \d+ training tokens, fewer than one window"):
        dm.setup("fit")


def test_a_zstd_shard_of_several_frames_is_read_to_its_end(tmp_path):
    """Every frame of a multi-frame shard is read (`read_across_frames`), in order."""
    import json as _json

    import zstandard

    from mixalign.data.reader import read_shard

    line = lambda i: (_json.dumps({"text": f"document {i}", "meta": {"pile_set_name": "a"}}) + "\n").encode()  # noqa: E731
    frames = [zstandard.ZstdCompressor().compress(b"".join(line(i) for i in range(k, k + 3))) for k in (0, 3, 6)]
    path = tmp_path / "frames.jsonl.zst"
    path.write_bytes(b"".join(frames))
    assert [d.text for d in read_shard(path)] == [f"document {i}" for i in range(9)]


PIECE_ALPHABET = ["word", "x", "42", "'s", "é", "日本", "(", ":", " ", "  ", "\n", "\n\n    ", "\t", "\u00a0"]


@settings(max_examples=150, deadline=None)
@given(parts=st.lists(st.sampled_from(PIECE_ALPHABET), max_size=60), limit=st.integers(1, 40))
def test_pieces_tokenize_as_the_whole_text_when_cut_before_a_word(parts, limit):
    """`pieces` (prepare's bound on the tokenizer's memory): the pieces rebuild the text, none is over the limit,
    and where every cut falls before a space that starts a word, GPT-2's byte-level BPE gives the whole text's
    tokens (a cut inside a run of whitespace does not: "a   b" is "a", "  ", " b"). Fails if `pieces` cuts before
    any space (the pre-fix rule)."""
    from mixalign.data.tokenizer import load_tokenizer

    text = "".join(parts)
    cut = list(pieces(text, limit))
    assert "".join(cut) == text and all(len(piece) <= limit for piece in cut)
    seams = [sum(map(len, cut[:i])) for i in range(1, len(cut))]
    if all(text[s] == " " and not text[s + 1:s + 2].isspace() and s + 1 < len(text) for s in seams):
        tokenizer = load_tokenizer("gpt2")
        whole = tokenizer.encode(text, add_special_tokens=False).ids
        assert [i for piece in cut for i in tokenizer.encode(piece, add_special_tokens=False).ids] == whole
    starts = [0, *seams]
    for start, seam in zip(starts, seams):  # a cut elsewhere only where the window has no space starting a word
        if not (text[seam] == " " and not text[seam + 1:seam + 2].isspace()):
            window = range(start + 1, start + limit + 1)
            assert not any(text[i] == " " and not text[i + 1:i + 2].isspace() for i in window), (start, seam)
