"""mixalign.data.tokenizer: loading, training, hashing and saving byte-level BPE tokenizers."""

from __future__ import annotations

import json
import os

import pytest
from tokenizers import Tokenizer

from mixalign.assets import SHIPPED_TOKENIZERS
from mixalign.data.tokenizer import (
    EOT,
    eot_id,
    load_tokenizer,
    save_tokenizer,
    tokenizer_hash,
    train_bpe,
)
from mixalign.errors import MixalignError

TEXTS = [
    "the cat sat on the mat. the cat ate the fish.\n" * 3,
    "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n",
    "In the beginning God created the heaven and the earth.\n",
    "Solve 13*t - 16 = 17*t for t.\n-4\n",
]
AWKWARD = [
    "",
    " ",
    "  leading and trailing spaces  ",
    "tabs\tand\r\nwindows\rlines\n\n\n",
    "unicode: é ü ß 日本語 🙂 \u200b\u00a0 \ufeff",
    "\x00\x01\x7f control",
    "x" * 500,
    "mixed ' quotes \" and ’curly’ — dashes",
]


@pytest.fixture(scope="module")
def small():
    return train_bpe(TEXTS, 300)


def test_train_bpe_layout(small):
    vocab = small.get_vocab()
    assert small.get_vocab_size() <= 300
    assert eot_id(small) == vocab[EOT] == 0
    # every byte symbol is in the vocabulary, so nothing is ever unknown
    assert small.get_vocab_size() >= 257
    assert small.encode("hello").ids and None not in small.encode("日本").ids


@pytest.mark.parametrize("text", AWKWARD + TEXTS)
def test_train_bpe_round_trips_any_text(small, text):
    assert small.decode(small.encode(text).ids) == text


def test_train_bpe_deterministic():
    a, b = train_bpe(TEXTS, 300), train_bpe(list(TEXTS), 300)
    assert a.to_str() == b.to_str()
    assert tokenizer_hash(a) == tokenizer_hash(b)


def test_train_bpe_rejects_tiny_vocab():
    with pytest.raises(ValueError, match="257"):
        train_bpe(TEXTS, 100)


def test_train_bpe_no_prefix_space(small):
    # add_prefix_space=False: a leading word is not turned into " word", so decoding is exact
    assert small.decode(small.encode("cat").ids) == "cat"
    assert small.encode("cat").ids != small.encode(" cat").ids


def test_eot_round_trip_keeps_special_when_asked(small):
    ids = small.encode(f"a{EOT}b").ids
    assert eot_id(small) in ids
    assert small.decode(ids, skip_special_tokens=False) == f"a{EOT}b"


def test_eot_id_missing_raises():
    from tokenizers import models

    with pytest.raises(ValueError, match="endoftext"):
        eot_id(Tokenizer(models.BPE()))


def test_hash_is_sha256_of_json(small):
    import hashlib

    h = tokenizer_hash(small)
    assert h == hashlib.sha256(small.to_str().encode()).hexdigest()
    assert len(h) == 64 and h != tokenizer_hash(train_bpe(TEXTS, 280))


def test_save_and_load(tmp_path, small):
    path = save_tokenizer(small, tmp_path / "sub" / "tokenizer.json")
    assert path == tmp_path / "sub" / "tokenizer.json"
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o644)
    assert [p.name for p in path.parent.iterdir()] == ["tokenizer.json"]  # no temp file left
    json.loads(path.read_text())
    for spec in (path, str(path), path.parent, str(path.parent)):
        assert tokenizer_hash(load_tokenizer(spec)) == tokenizer_hash(small)
    # overwrite in place
    other = train_bpe(TEXTS, 280)
    save_tokenizer(other, path)
    assert tokenizer_hash(load_tokenizer(path)) == tokenizer_hash(other)


def test_load_missing_names_value_and_shipped(tmp_path):
    with pytest.raises(MixalignError) as e:
        load_tokenizer("no-such-tokenizer")
    msg = str(e.value)
    assert "no-such-tokenizer" in msg
    for name in SHIPPED_TOKENIZERS:
        assert name in msg
    with pytest.raises(MixalignError, match="empty"):
        load_tokenizer(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MixalignError):
        load_tokenizer(tmp_path / "empty")


@pytest.mark.parametrize("content", ["{}", "not json at all", '{"model": 3}'])
def test_load_invalid_raises_value_error(tmp_path, content):
    bad = tmp_path / "tokenizer.json"
    bad.write_text(content)
    with pytest.raises(ValueError, match="tokenizer.json"):
        load_tokenizer(bad)
    with pytest.raises(ValueError):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize("name", SHIPPED_TOKENIZERS)
def test_shipped_names_load(name):
    tok = load_tokenizer(name)
    assert eot_id(tok) == {"gpt2": 50256, "demo-4k": 0}[name]
    assert tok.decode(tok.encode("Hello world!\n").ids) == "Hello world!\n"
