import numpy as np
import pytest

from mixalign.errors import DataError
from mixalign.llvec.scoring import ScoreResult
from mixalign.llvec.textset import TextSet
from mixalign.llvec.vectors import (
    LogLikelihoodVector,
    check_same_textset,
    load_vector,
    save_vector,
    vector_from_scores,
)

TS = TextSet(("first text é", "second", "third one"), ("b", "a", "b"), {"n": 3, "seed": 0})


def make_vector(textset=TS, model="model-a", seed=0) -> LogLikelihoodVector:
    rng = np.random.default_rng(seed)
    values = -rng.random(len(textset)) * 1000 - 1e-12 * rng.random(len(textset))  # full float64 mantissas
    result = ScoreResult(values, n_windowed=1, tokens_per_text=np.array([20, 12, 10]))
    return vector_from_scores(result, textset, model, meta={"tokenizer_id": "abc", "clip": None})


def test_vector_from_scores():
    vec = make_vector()
    assert vec.textset_hash == TS.hash and vec.model == "model-a"
    assert vec.mean_bytes == TS.mean_bytes and vec.domains == TS.domains
    assert vec.n_bytes.tolist() == TS.n_bytes.tolist() and vec.n_bytes.dtype == np.int64
    assert vec.meta["n_windowed"] == 1 and vec.meta["n_tokens"] == 42 and vec.meta["tokenizer_id"] == "abc"
    with pytest.raises(ValueError, match="2 scores.*3 texts"):
        vector_from_scores(ScoreResult(np.zeros(2), 0, np.zeros(2, dtype=np.int64)), TS, "m")


@pytest.mark.parametrize("name", ["vec.npz", "vec"])
def test_round_trip_is_exact_and_atomic(tmp_path, name):
    vec = make_vector()
    path = save_vector(vec, tmp_path / name)
    assert path.name == "vec.npz"
    assert [p.name for p in tmp_path.iterdir()] == ["vec.npz"]  # no temp files left behind
    for where in (path, tmp_path / name):
        back = load_vector(where)
        assert back.values.dtype == np.float64
        assert np.array_equal(back.values, vec.values)  # bit-exact
        assert back.n_bytes.dtype == np.int64 and np.array_equal(back.n_bytes, vec.n_bytes)
        assert back.domains == vec.domains and back.textset_hash == vec.textset_hash
        assert back.model == vec.model and back.mean_bytes == vec.mean_bytes and back.meta == vec.meta
    save_vector(make_vector(seed=1), path)  # overwrite in place
    assert not np.array_equal(load_vector(path).values, vec.values)
    assert [p.name for p in tmp_path.iterdir()] == ["vec.npz"]


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="nothing.npz.*no such"):
        load_vector(tmp_path / "nothing.npz")
    path = save_vector(make_vector(), tmp_path / "v.npz")
    data = path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="trunc.npz"):
        load_vector(tmp_path / "trunc.npz")
    np.savez(tmp_path / "other.npz", values=np.zeros(3))
    with pytest.raises(DataError, match="other.npz.*not a mixalign"):
        load_vector(tmp_path / "other.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="text.npz"):
        load_vector(tmp_path / "text.npz")


def test_check_same_textset():
    a, b = make_vector(model="model-a"), make_vector(model="model-b", seed=2)
    check_same_textset(a, b)
    check_same_textset(a)
    other_ts = TextSet(TS.texts[::-1], TS.domains[::-1], {})
    c = make_vector(other_ts, model="model-c")
    with pytest.raises(ValueError) as err:
        check_same_textset(a, b, c)
    message = str(err.value)
    assert TS.hash[:12] in message and other_ts.hash[:12] in message
    assert "model-a" in message and "model-c" in message
