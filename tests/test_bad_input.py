"""Bad input: every case exits non-zero with a message naming the file, field or value at fault,
and leaves no partial output behind (no checkpoint, vector, weights file or half-built cache)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import REPO, TINY

from mixalign.cli import main
from mixalign.data.prepare import _is_valid
from mixalign.llvec.textset import TextSet, _textset_hash

TARGET_NPZ = str(REPO / "checkpoints" / "target.npz")  # an existing target: the case at fault is another value
GOOD = json.dumps({"text": "a perfectly fine document " * 20, "meta": {"pile_set_name": "alpha"}})


def run(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.err + captured.out


def outputs(root: Path) -> list[Path]:
    """What a failed run must not leave: results, or temporaries (dot files and folders) anywhere.

    A prepared-data cache may stay, but only complete (a later run reuses it): checked as well.
    """
    cache = root / "cache"
    for prepared in cache.iterdir() if cache.is_dir() else []:
        assert prepared.name.startswith(".") or _is_valid(prepared, prepared.name), f"incomplete cache {prepared}"
    return [p for p in root.rglob("*") if p.name.startswith(".") or (
        p.is_file() and cache not in p.parents and (p.suffix in {".ckpt", ".npz", ".png"} or p.name == "w.yaml"))]


@pytest.fixture()
def work(tmp_path, corpus) -> Path:
    (tmp_path / "shards").mkdir()
    return tmp_path


def fit(work: Path, corpus: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(TINY), "--data.source", str(corpus), "--data.tokenizer", "null",
            "--data.bpe_vocab_size", "300", "--data.cache_dir", str(work / "cache"),
            "--trainer.default_root_dir", str(work / "run"), "--trainer.max_steps", "2", *extra]


def shard(work: Path, name: str, content: bytes) -> str:
    path = work / "shards" / name
    path.write_bytes(content)
    return str(path)


CASES = {
    "nonexistent data path": (lambda w, c: fit(w, c, "--data.source", str(w / "nope")), r"data.source '.*nope': no such file"),
    "empty shard": (lambda w, c: fit(w, c, "--data.source", shard(w, "empty.jsonl", b"")), r"empty.jsonl: no documents"),
    "malformed JSON line": (lambda w, c: fit(w, c, "--data.source", shard(w, "bad.jsonl", f"{GOOD}\n{{oops\n".encode())),
                            r"bad.jsonl:2: malformed JSON"),
    "line without text": (lambda w, c: fit(w, c, "--data.source", shard(w, "t.jsonl", b'{"meta": {"pile_set_name": "a"}}\n')),
                          r"t.jsonl:1: missing string field 'text'"),
    "line without pile_set_name": (lambda w, c: fit(w, c, "--data.source", shard(w, "m.jsonl", b'{"text": "x", "meta": {}}\n')),
                                   r"m.jsonl:1: missing string field 'meta.pile_set_name'"),
    "non-UTF-8 bytes": (lambda w, c: fit(w, c, "--data.source", shard(w, "u.jsonl", GOOD.encode() + b"\n\xff\xfe\n")),
                        r"u.jsonl:2: not valid UTF-8"),
    "unknown domain in domains": (lambda w, c: fit(w, c, "--data.domains", "[alpha, omega]"),
                                  r"unknown domain\(s\) \['omega'\]; the data has: \['alpha', 'beta', 'gamma'\]"),
    "unknown domain in weights": (lambda w, c: fit(w, c, "--data.weights", "{alpha: 1, omega: 1}"),
                                  r"data.weights: unknown domain\(s\) \['omega'\]"),
    "negative weight": (lambda w, c: fit(w, c, "--data.weights", "{alpha: -1, beta: 2}"), r"weight of 'alpha' is negative \(-1"),
    "all-zero weights": (lambda w, c: fit(w, c, "--data.weights", "{alpha: 0, beta: 0}"), r"data.weights: all weights are zero"),
    "weights file not YAML": (lambda w, c: fit(w, c, "--data.weights", shard(w, "w.yaml", b"alpha: [1, 2\n")),
                              r"w.yaml is not valid YAML"),
    "domain smaller than a window": (lambda w, c: fit(w, c, "--data.val_fraction", "0.3", "--data.source", shard(
        w, "s.jsonl", c.read_bytes() + "".join(json.dumps({"text": f"t{i}", "meta": {"pile_set_name": "tiny"}}) + "\n"
                                               for i in range(20)).encode())),
                                     r"domain 'tiny' has \d+ training tokens, fewer than one window of data.block_size \+ 1 = 65"),
    "tokenizer path missing": (lambda w, c: fit(w, c, "--data.tokenizer", str(w / "tok.json"), "--data.bpe_vocab_size", "null"),
                               r"^mixalign fit: error: data.tokenizer: .*File is not readable: .*tok.json.* \(--help lists the options\)$"),
    "vocab larger than the model's": (lambda w, c: fit(w, c, "--data.tokenizer", "gpt2", "--data.bpe_vocab_size", "null",
                                                       "--model.init_from", str(REPO / "checkpoints/base.ckpt"),
                                                       "--model.n_layer", "4", "--model.n_head", "4", "--model.n_embd", "128",
                                                       "--data.block_size", "128"),
                                      r"another architecture \(vocab_size: checkpoint 4096 vs config 50257\)"),
    "checkpoint of another architecture": (lambda w, c: fit(w, c, "--data.tokenizer", "demo-4k", "--data.bpe_vocab_size", "null",
                                                            "--model.init_from", str(REPO / "checkpoints/base.ckpt")),
                                           r"base.ckpt: checkpoint is of another architecture \(n_layer: checkpoint 4 vs config 2"),
    "truncated checkpoint": (lambda w, c: fit(w, c, "--model.init_from",
                                              shard(w, "cut.ckpt", (REPO / "checkpoints/base.ckpt").read_bytes()[:4096])),
                             r"cut.ckpt: cannot load checkpoint \(truncated or corrupt"),
    "block_size larger than the checkpoint's": (lambda w, c: fit(w, c, "--data.tokenizer", "demo-4k", "--data.bpe_vocab_size", "null",
                                                            "--model.init_from", str(REPO / "checkpoints/base.ckpt"),
                                                            "--model.n_layer", "4", "--model.n_head", "4", "--model.n_embd", "128",
                                                            "--data.block_size", "512"),
                                                 r"base.ckpt: checkpoint is of another architecture \(block_size: checkpoint 128 vs config 512\)"),
    "probe steps 0": (lambda w, c: fit(w, c, "--mixture.probe_steps", "0", "--mixture.target", TARGET_NPZ),
                      r"mixture.probe_steps must be positive, got 0"),
    "unknown solver": (lambda w, c: fit(w, c, "--mixture.solver", "magic", "--mixture.target", TARGET_NPZ),
                       r"mixture.solver must be one of \('direction', 'distance'\), got 'magic'"),
    "target vector of another text set": (lambda w, c: ["weights", "--config", str(TINY), "--data.cache_dir", str(w / "cache"),
                                                        "--mixture.target", str(REPO / "checkpoints/target.npz"),
                                                        "--mixture.textset", shard(w, "other.jsonl", b""), "--out", str(w / "w.yaml")],
                                          None),  # filled in below: needs a real text set file
    "text set with zero texts": (lambda w, c: ["score", "--model", str(REPO / "checkpoints/base.ckpt"), "--textset",
                                               shard(w, "zero.jsonl", b""), "--out", str(w / "v.npz")], None),
    "kl of vectors from different text sets": (lambda w, c: ["kl", str(REPO / "checkpoints/target.npz"), str(w / "small.npz")],
                                               r"text set"),
    "weights without --out": (lambda w, c: ["weights", "--config", str(TINY)], r"required: out"),
    "weights --out an existing directory": (lambda w, c: ["weights", "--config", str(TINY), "--mixture.target", TARGET_NPZ,
                                                          "--out", str(w / "shards")],
                                            r"--out .*shards: is a directory; name the file to write"),
    "corrupt zstd shard": (lambda w, c: fit(w, c, "--data.source", shard(w, "bad.jsonl.zst", b"not zstd at all" * 20)),
                           r"bad.jsonl.zst: not a readable zstd stream \(corrupt or not zstd\)"),
    "mixture.n_texts over the text set": (lambda w, c: ["weights", "--config", str(TINY), "--mixture.target", TARGET_NPZ,
                                                        "--mixture.n_texts", "5000", "--out", str(w / "w.yaml")],
                                          r"mixture.n_texts is 5000 but the text set demo has 1000 texts: set "
                                          r"mixture.n_texts to at most 1000, or null"),
    "kl.n_texts over the text set": (lambda w, c: fit(w, c, "--mixture.target", TARGET_NPZ, "--data.weights", "uniform",
                                                      "--kl.n_texts", "5000"),
                                     r"kl.n_texts is 5000 but the text set demo has 1000 texts"),
}


def _text_set_file(path: Path, texts: int) -> str:
    """A valid text-set file of `texts` texts (zero makes an empty one)."""
    from mixalign.llvec.textset import save_textset

    if texts == 0:
        header = {"format": "mixalign-textset", "version": 1, "hash": _textset_hash([], []), "n": 0, "meta": {}}
        path.write_text(json.dumps(header) + "\n")
        return str(path)
    ts = TextSet(texts=tuple(f"text number {i} " * 30 for i in range(texts)), domains=("alpha",) * texts, meta={})
    return str(save_textset(ts, path))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, capsys, work, corpus):
    make_args, pattern = CASES[case]
    args = make_args(work, corpus)
    if case == "target vector of another text set":
        args[args.index("--mixture.textset") + 1] = _text_set_file(work / "other.jsonl", 5)
        pattern = r"target.npz was scored on text set a228f82f6a2c, but this run uses text set [0-9a-f]{12}"
    if case == "text set with zero texts":
        args[args.index("--textset") + 1] = _text_set_file(work / "zero.jsonl", 0)
        pattern = r"zero.jsonl.*(zero texts|no texts|empty)"
    if case == "kl of vectors from different text sets":
        import shutil

        from mixalign.llvec.textset import load_textset, subset_textset
        from mixalign.llvec.vectors import load_vector, save_vector, subset_vector

        full = load_vector(REPO / "checkpoints/target.npz")
        save_vector(subset_vector(full, subset_textset(load_textset("demo"), 10)), work / "small.npz")
        shutil.copy(work / "small.npz", work / "keep.bin")  # an input, not an output of the failing run
        pattern = r"a228f82f6a2c.*[0-9a-f]{12}|[0-9a-f]{12}.*a228f82f6a2c"
    before = set(outputs(work))
    code, message = run(capsys, *args)
    assert code == 2, message
    assert pattern is not None and __import__("re").search(pattern, message), message
    assert set(outputs(work)) == before, "a failed run left output behind"


def test_unknown_config_key_uses_lightning_cli_message(capsys):
    code, message = run(capsys, "fit", "--config", str(TINY), "--data.nonsense", "1")
    assert code == 2 and "unrecognized arguments: --data.nonsense" in message


def _short_vector(work: Path, cut: int, poison: float | None = None) -> str:
    """The shipped target vector with its last `cut` values dropped (its text-set hash kept), or one value poisoned."""
    import numpy as np

    with np.load(REPO / "checkpoints/target.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if cut:
        arrays.update(values=arrays["values"][:-cut], n_bytes=arrays["n_bytes"][:-cut], domains=arrays["domains"][:-cut])
    if poison is not None:
        arrays["values"] = arrays["values"].copy()
        arrays["values"][3] = poison
    path = work / f"bad-{cut}-{poison}.npz"
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("cut, poison, pattern", [
    (10, None, r"vector .*bad-10-None.npz: 990 values, but its text set a228f82f6a2c has 1000 texts"),
    (0, float("nan"), r"bad-0-nan.npz: 1 of its values are NaN or infinite"),
    (0, float("inf"), r"bad-0-inf.npz: 1 of its values are NaN or infinite"),
])
def test_a_target_vector_of_the_wrong_length_or_with_nan_is_refused_before_any_run(cut, poison, pattern, capsys,
                                                                                    work, demo_cache):
    """A vector cut short but carrying its text set's hash was subset by index into a wrong distance."""
    args = ["fit", "--config", str(TINY), "--data.cache_dir", str(demo_cache), "--trainer.default_root_dir",
            str(work / "run"), "--mixture.target", _short_vector(work, cut, poison), "--kl.n_texts", "40"]
    code, message = run(capsys, *args)
    assert code == 2 and __import__("re").search(pattern, message), message
    assert not (work / "run").exists() or not list((work / "run").rglob("*.ckpt"))


def test_weights_whose_sum_overflows_keep_their_proportions_and_odd_keys_are_named():
    import numpy as np

    from mixalign.data.weights import normalise_weights
    from mixalign.errors import DataError

    assert np.allclose(normalise_weights({"a": 1e308, "b": 1e308}, ["a", "b"]), [0.5, 0.5])
    assert np.allclose(normalise_weights({"a": 3e307, "b": 1e308, "c": 1e308}, ["a", "b", "c"]), [3 / 23, 10 / 23, 10 / 23])
    with pytest.raises(DataError, match=r"domain names must be strings, got \[1, None\]"):
        normalise_weights({1: 0.5, None: 0.5, "a": 1.0}, ["a"])


def _dead_pid() -> int:
    """A process id that no process has now (a killed writer's)."""
    import os

    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_a_killed_prepare_leaves_no_temporary_directory_forever(tmp_path, corpus):
    """Issue 41 (14): a prepare killed mid-build left `.<key>.…` in the cache for good (up to the
    size of the tokenized corpus). A later prepare removes this host's leftovers whose writer is
    dead, and keeps a live writer's. Fails if `_remove_dead_leftovers` is not called from
    `prepare`, or if it stops checking the pid (the live one would go) or the age (the old one stays)."""
    import os

    from mixalign.data.prepare import PrepareConfig, prepare, temp_prefix

    cache = tmp_path / "cache"
    cache.mkdir()
    key = "0123456789abcdef0123"
    dead = cache / f"{temp_prefix(key, _dead_pid())}killed"
    live = cache / f"{temp_prefix(key, os.getppid())}running"
    old, fresh = cache / f".{key}.olderformat", cache / f".{key}.freshformat"  # no pid: judged by age
    for leftover in (dead, live, old, fresh):
        (leftover / "shard00000").mkdir(parents=True)
        (leftover / "shard00000" / "part.bin").write_bytes(b"\0" * 1024)
    for path in [old, *old.rglob("*")]:
        os.utime(path, (0, __import__("time").time() - 2 * 24 * 3600))
    config = PrepareConfig(source=str(corpus), tokenizer=None, bpe_vocab_size=300, domains=None,
                           val_fraction=0.1, split_seed=0, skip_malformed=False)
    data = prepare(config, cache)
    assert not dead.exists(), "a dead writer's temporary directory survived"
    assert not old.exists(), "a leftover untouched for two days survived"
    assert live.is_dir() and (live / "shard00000" / "part.bin").is_file(), "a live writer's directory was removed"
    assert sorted(p.name for p in cache.iterdir()) == sorted([data.root.name, live.name, fresh.name])


def test_a_text_set_of_one_text_is_refused_before_scoring(capsys, work):
    """Issue 41 (10): a text set of exactly 1 text was scored, then the distance (a variance over
    texts) failed with a traceback. Fails if `load_textset` checks only for zero texts."""
    path = _text_set_file(work / "one.jsonl", 1)
    before = set(outputs(work))
    code, message = run(capsys, "score", "--model", str(REPO / "checkpoints/base.ckpt"), "--textset", path,
                        "--out", str(work / "v.npz"))
    assert code == 2 and __import__("re").search(r"one.jsonl: text set with 1 text; .*at least 2", message), message
    assert len(message.strip().splitlines()) == 1, message
    assert set(outputs(work)) == before


def _hf_dir(work: Path, name: str) -> Path:
    """A GPT-2 Hugging Face directory's config.json (weights added by the caller)."""
    path = work / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 64,
                                                  "n_positions": 64, "vocab_size": 300}))
    return path


class _Payload:
    """What a hostile pickle would run on load (here: marks that it ran)."""

    ran = False

    def __reduce__(self):
        return (_Payload._run, ())

    @staticmethod
    def _run():
        _Payload.ran = True
        return {}


@pytest.mark.parametrize("weights", ["pickled pytorch_model.bin", "truncated model.safetensors"])
def test_init_from_a_hf_dir_with_hostile_or_cut_weights_is_a_clear_error(weights, capsys, work, corpus):
    """Issue 41 (8): `init_from` a Hugging Face directory whose pytorch_model.bin holds a pickled
    object, or whose model.safetensors is cut short, ended in a traceback. The .bin is never
    unpickled (weights_only), and both give one line naming the file. Fails if `_read_weights`
    loads without weights_only=True (the payload runs) or lets the loaders' errors through."""
    import torch

    hf = _hf_dir(work, "hf")
    if weights.startswith("pickled"):
        torch.save({"wte.weight": torch.zeros(300, 64), "evil": _Payload()}, hf / "pytorch_model.bin")
        pattern = r"pytorch_model.bin: refused: .*could run code"
    else:
        from safetensors.torch import save_file

        save_file({"wte.weight": torch.zeros(300, 64), "wpe.weight": torch.zeros(64, 64)}, str(hf / "model.safetensors"))
        data = (hf / "model.safetensors").read_bytes()
        (hf / "model.safetensors").write_bytes(data[: len(data) // 2])
        pattern = r"model.safetensors: cannot read the weights \(truncated or corrupt"
    before = set(outputs(work))
    code, message = run(capsys, *fit(work, corpus, "--model.init_from", str(hf), "--model.n_layer", "2",
                                      "--model.n_head", "2", "--model.n_embd", "64", "--data.block_size", "64"))
    assert code == 2 and __import__("re").search(pattern, message), message
    assert not _Payload.ran, "the pickled payload ran"
    assert set(outputs(work)) == before


def test_a_checkpoint_save_on_a_full_disk_says_so_and_keeps_the_previous(tmp_path, monkeypatch):
    """Issue 41 (5): a full disk during `fit` ended in `RuntimeError: [enforce fail at
    inline_container.cc:672] unexpected pos ...`, which never says "no space". The atomic
    checkpoint IO turns it into a one-line error naming the checkpoint and the free space, and
    the previous checkpoint stays whole. Fails if `save_checkpoint` lets the RuntimeError through."""
    import torch

    from mixalign.errors import MixalignError
    from mixalign.io import atomic_checkpoint_io

    target = tmp_path / "last.ckpt"
    io = atomic_checkpoint_io()
    io.save_checkpoint({"state_dict": {"w": torch.ones(4)}}, target)
    previous = target.read_bytes()

    def full_disk(obj, f, *args, **kwargs):
        with open(f, "wb") as out:
            out.write(b"\0" * 10_000)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 10048 vs 9984")

    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.setattr("shutil.disk_usage", lambda path: __import__("shutil")._ntuple_diskusage(10**9, 10**9, 512))
    with pytest.raises(MixalignError) as error:
        io.save_checkpoint({"state_dict": {"w": torch.zeros(4)}}, target)
    message = str(error.value)
    assert "\n" not in message, message
    assert __import__("re").search(rf"cannot write checkpoint {__import__('re').escape(str(target))}: .*"
                                   r"no space left.*512 B free", message), message
    assert target.read_bytes() == previous
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "a temporary file was left"


def _resume_from(work: Path, kind: str) -> str:
    """A `--ckpt_path` that cannot be resumed from: a pickled object, a cut file, another architecture."""
    import torch

    base = REPO / "checkpoints/base.ckpt"
    if kind == "pickled object":
        torch.save({"state_dict": {}, "hyper_parameters": {}, "evil": _Payload()}, work / "evil.ckpt")
        return str(work / "evil.ckpt")
    if kind == "truncated file":
        return shard(work, "cut.ckpt", base.read_bytes()[:4096])
    return str(base)


@pytest.mark.parametrize("command", ["fit", "validate"])
@pytest.mark.parametrize("kind, pattern", [
    ("pickled object", r"evil.ckpt: refused: .*could run code"),
    ("truncated file", r"cut.ckpt: cannot load checkpoint \(truncated or corrupt"),
    ("another architecture", r"--ckpt_path .*base.ckpt: checkpoint is of another architecture \(n_layer: checkpoint 4 "
                             r"vs config 2, n_head: checkpoint 4 vs config 2, n_embd: checkpoint 128 vs config 64, block_size: "
                             r"checkpoint 128 vs config 64\)"),
])
def test_a_ckpt_path_that_cannot_be_resumed_is_a_clear_error(command, kind, pattern, capsys, work, corpus):
    """Issue 41 (7): a bad `--ckpt_path` ended in a raw traceback (Lightning's torch.load), and one of
    another architecture silently replaced the configured model.* by the checkpoint's. Fails if
    `MixalignCLI.parse_arguments` stops checking the checkpoint before Lightning reads it."""
    args = fit(work, corpus, "--ckpt_path", _resume_from(work, kind))
    args[0] = command
    before = set(outputs(work))
    code, message = run(capsys, *args)
    assert code == 2 and __import__("re").search(pattern, message), message
    assert not _Payload.ran, "the pickled payload ran"
    assert set(outputs(work)) == before


def test_a_ckpt_path_of_another_vocabulary_is_a_clear_error(capsys, work, corpus):
    """Issue 41 (7): the vocabulary is known only once the data's tokenizer is (data.vocab_size), so
    it is compared after the classes are built: base.ckpt has the demo tokenizer's 4096, this data
    a BPE of 300. Fails if `MixalignCLI.after_instantiate_classes` stops comparing vocab_size."""
    args = fit(work, corpus, "--ckpt_path", str(REPO / "checkpoints/base.ckpt"), "--model.n_layer", "4",
               "--model.n_head", "4", "--model.n_embd", "128", "--data.block_size", "128")
    code, message = run(capsys, *args)
    assert code == 2 and __import__("re").search(
        r"--ckpt_path .*base.ckpt: checkpoint is of another architecture \(vocab_size: checkpoint 4096 vs config 300\)",
        message), message
    assert not list(work.rglob("*.ckpt")), "a run started"


def test_ckpt_path_last_of_another_architecture_is_a_clear_error(capsys, work, corpus):
    """Issue 41 (7): `--ckpt_path last` is resolved after Lightning's own reading (which skips it), so
    it is checked where it is found. Fails if `before_instantiate_classes` stops calling `resume_hparams`
    (the load then fails with a state-dict traceback)."""
    import shutil

    last = work / "run" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    shutil.copy(REPO / "checkpoints/base.ckpt", last)
    code, message = run(capsys, *fit(work, corpus, "--ckpt_path", "last"))
    assert code == 2 and __import__("re").search(
        r"--ckpt_path .*last.ckpt: checkpoint is of another architecture \(n_layer: checkpoint 4 vs config 2", message), message
    assert [p.name for p in work.rglob("*.ckpt")] == ["last.ckpt"]


def test_fit_on_a_full_disk_ends_in_one_line_naming_the_checkpoint(capsys, monkeypatch, work, corpus):
    """Issue 41 (5), through `fit`: the error raised in the checkpoint IO reaches the command line as
    one line and exit status 2 (not Lightning's traceback), and no checkpoint or temporary file is
    left. Fails if `save_checkpoint` lets torch's RuntimeError through."""
    import shutil

    import torch

    save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if not str(f).endswith(".ckpt"):
            return save(obj, f, *args, **kwargs)
        Path(f).write_bytes(b"\0" * 10_000)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 10048 vs 9984")

    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 512))
    code, message = run(capsys, *fit(work, corpus))
    lines = [line for line in message.splitlines() if line.startswith("mixalign: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in message, message
    assert __import__("re").search(r"cannot write checkpoint .*\.ckpt: no space left .*512 B free", lines[0]), message
    assert not list(work.rglob("*.ckpt")) and not [p for p in work.rglob(".*ckpt*")]


def test_a_hf_target_with_a_pickled_weights_file_is_refused_in_one_line(capsys, work):
    """Issue 41 (8), for a scored model (`--model`, a target): transformers refuses the pickle
    (weights_only) but its message ran over several lines and advised `weights_only=False`. Fails
    if `_load_hf_parts` passes the exception's whole text through."""
    pytest.importorskip("transformers")
    import torch

    hf = _hf_dir(work, "hf")
    torch.save({"transformer.wte.weight": torch.zeros(300, 64), "evil": _Payload()}, hf / "pytorch_model.bin")
    code, message = run(capsys, "score", "--model", str(hf), "--textset", "demo", "--out", str(work / "v.npz"))
    assert code == 2 and len(message.strip().splitlines()) == 1, message
    assert __import__("re").search(r"hf: refused: .*pytorch_model.bin.*could run code", message), message
    assert "weights_only` set to `False" not in message and not _Payload.ran


def test_a_fit_that_fails_before_training_leaves_no_empty_run_folder(capsys, work, corpus):
    """A user error raised inside the trainer (here kl.n_texts, in the callback's setup) removes the
    version_N folder the logger had opened, which held only an event file (mutation: without
    `drop_if_unused` the next run of the same folder becomes version_1 beside an empty version_0)."""
    code, out = run(capsys, *fit(work, corpus, "--mixture.target", TARGET_NPZ, "--data.weights", "uniform",
                                 "--kl.n_texts", "5000"))
    assert code == 2 and "kl.n_texts is 5000" in out
    assert not list((work / "run" / "lightning_logs").glob("version_*"))


@pytest.mark.parametrize("change, field", [(("--data.weights", "{alpha: 3, beta: 1}"), "data.weights"),
                                           (("--data.seed", "7"), "data.seed")])
def test_resuming_with_another_data_stream_is_a_clear_error(change, field, capsys, work, corpus):
    """Issue 41 (questionable): a resumed fit restores its run's weights schedule and data order, so a
    config asking for other weights (or another data seed) was silently ignored. Now one line names
    the field and both values, and the run's checkpoint is untouched. Mutation: without
    `check_resume_data` the resume trains on and exits 0."""
    main(fit(work, corpus))
    capsys.readouterr()  # the first run's own output
    last = work / "run" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    code, message = run(capsys, *fit(work, corpus, "--trainer.max_steps", "4", "--ckpt_path", "last", *change))
    assert code == 2 and len(message.strip().splitlines()) == 1, message
    assert __import__("re").search(rf"last.ckpt: resuming continues that run's data stream, .*{field}: run .* vs config ",
                                   message), message
    assert last.read_bytes() == before


def _vector_file(work: Path, name: str, **arrays) -> str:
    """The shipped target vector's arrays with some replaced (`None` drops one), or only `arrays` with `only`."""
    import numpy as np

    with np.load(REPO / "checkpoints/target.npz", allow_pickle=False) as z:
        kept = {k: z[k] for k in z.files}
    kept = arrays.pop("only", None) or {**kept, **arrays}
    np.savez(work / name, **kept)
    return str(work / name)


def _hf_config(work: Path, name: str, config: str) -> str:
    (work / name).mkdir()
    if config:
        (work / name / "config.json").write_text(config)
    else:
        (work / name / "model.safetensors").write_bytes(b"")
    return str(work / name)


def _tampered_text_set(work: Path) -> str:
    texts = [json.dumps({"text": f"{word} " * 30, "domain": word}) for word in ("alpha", "beta")]
    header = json.dumps({"format": "mixalign-textset", "version": 1, "hash": "deadbeef0000", "n": 2, "meta": {}})
    return shard(work, "tampered.jsonl", "\n".join([header, *texts, ""]).encode())


BASE = str(REPO / "checkpoints" / "base.ckpt")
SCORE = ["score", "--model", BASE, "--n_texts", "4"]
# Round two: the same families (data, weights, vectors, text sets, checkpoints, Hugging Face directories,
# disk, configs), each a one-line error naming the file, field or value, exit 2, nothing written.
ROUND_TWO = {
    "weights file holding a list": (lambda w, c: fit(w, c, "--data.weights", shard(w, "w.yaml", b"- 1\n- 2\n")),
                                    r"w.yaml must hold a mapping of domain -> weight"),
    "weight NaN": (lambda w, c: fit(w, c, "--data.weights", "{alpha: .nan, beta: 1}"),
                   r"data.weights: weight of 'alpha' must be a finite number, got nan"),
    "weight infinite": (lambda w, c: fit(w, c, "--data.weights", "{alpha: .inf, beta: 1}"),
                        r"data.weights: weight of 'alpha' must be a finite number, got inf"),
    "weight not a number": (lambda w, c: fit(w, c, "--data.weights", "{alpha: lots, beta: 1}"),
                            r"^mixalign fit: error: data.weights: .*Got value: lots.*Given value: \{'alpha': 'lots'"),
    "weights file missing": (lambda w, c: fit(w, c, "--data.weights", str(w / "nope.yaml")),
                             r"^mixalign fit: error: data.weights: .*File is not readable: '.*nope.yaml'"),
    "data glob matching nothing": (lambda w, c: fit(w, c, "--data.source", str(w / "nothing-*.jsonl")),
                                   r"data.source '.*nothing-\*.jsonl': glob matches no .jsonl/.jsonl.zst/.parquet files"),
    "data folder without shards": (lambda w, c: fit(w, c, "--data.source", str(w / "shards")),
                                   r"data.source '.*shards': directory has no .jsonl/.jsonl.zst/.parquet files"),
    "data file of another format": (lambda w, c: fit(w, c, "--data.source", shard(w, "x.jsonl.gz", b"\x1f\x8b..")),
                                    r"data.source '.*x.jsonl.gz': not a .jsonl/.jsonl.zst/.parquet file"),
    "JSON line that is a list": (lambda w, c: fit(w, c, "--data.source", shard(w, "l.jsonl", b"[1, 2]\n")),
                                 r"l.jsonl:1: expected a JSON object, got list"),
    "text that is a number": (lambda w, c: fit(w, c, "--data.source", shard(w, "n.jsonl", b'{"text": 5, "meta": {}}\n')),
                              r"n.jsonl:1: missing string field 'text'"),
    "val_fraction 1": (lambda w, c: fit(w, c, "--data.val_fraction", "1.0"), r"data.val_fraction must be in \(0, 1\), got 1.0"),
    "block_size 0": (lambda w, c: fit(w, c, "--data.block_size", "0"), r"data.block_size must be a positive integer, got 0"),
    "batch_size 0": (lambda w, c: fit(w, c, "--data.batch_size", "0"), r"data.batch_size must be a positive integer, got 0"),
    "vector that is not an .npz": (lambda w, c: ["kl", shard(w, "junk.npz", b"not a zip" * 20), TARGET_NPZ],
                                   r"junk.npz: not a log-likelihood vector \(an .npz is a zip archive"),
    "vector without its arrays": (lambda w, c: ["kl", _vector_file(w, "bare.npz", only={"other": __import__("numpy").zeros(3)}),
                                                TARGET_NPZ], r"bare.npz: not a mixalign log-likelihood vector \(missing "),
    "vector holding pickled objects": (lambda w, c: ["kl", _vector_file(w, "obj.npz", values=__import__("numpy").array(
        [{"a": 1}] * 1000, dtype=object)), TARGET_NPZ], r"obj.npz: cannot read .*allow_pickle=False"),
    "vector of two columns": (lambda w, c: ["kl", _vector_file(w, "wide.npz", values=__import__("numpy").zeros((1000, 2))),
                                            TARGET_NPZ], r"wide.npz: inconsistent log-likelihood vector: \(1000, 2\) values"),
    "text set edited after it was written": (lambda w, c: ["score", "--model", BASE, "--textset", _tampered_text_set(w),
                                                           "--out", str(w / "v.npz")],
                                             r"tampered.jsonl: text set hash mismatch: header says deadbeef0000"),
    "text set file of another kind": (lambda w, c: ["score", "--model", BASE, "--textset", shard(w, "t.jsonl", b'{"a": 1}\n'),
                                                    "--out", str(w / "v.npz")], r"t.jsonl: not a mixalign text set"),
    "model directory without config.json": (lambda w, c: [*SCORE, "--model", _hf_config(w, "noconfig", ""), "--out",
                                                          str(w / "v.npz")], r"noconfig: a directory without config.json"),
    "model config.json that is not JSON": (lambda w, c: [*SCORE, "--model", _hf_config(w, "junk", "{oops"), "--out",
                                                         str(w / "v.npz")], r"junk/config.json: not readable JSON"),
    "model of an unknown architecture": (lambda w, c: [*SCORE, "--model", _hf_config(w, "alien", '{"model_type": "alien_arch"}'),
                                                       "--out", str(w / "v.npz")],
                                         r"alien: cannot load a Hugging Face causal LM and tokenizer from it"),
    "model path missing": (lambda w, c: [*SCORE, "--model", str(w / "nope.ckpt"), "--out", str(w / "v.npz")],
                           r"model '.*nope.ckpt': no such file or directory"),
    "--out under a file": (lambda w, c: [*SCORE, "--out", shard(w, "afile", b"x") + "/v.npz"],
                           r"--out .*afile/v.npz: .*afile is a file, so nothing can be written under it"),
    "export --out an existing file": (lambda w, c: ["export", "--ckpt", BASE, "--out", shard(w, "taken", b"x")],
                                      r"--out .*taken: is a file; name a directory to write"),
    "--ckpt_path a directory": (lambda w, c: fit(w, c, "--ckpt_path", str(w / "shards")),
                                r"--ckpt_path .*shards: a directory, not a checkpoint file"),
    "teacher of another tokenizer": (lambda w, c: fit(w, c, "--model.teacher", BASE),
                                     r"model.teacher .*base.ckpt: its tokenizer differs from the data's"),
    "checkpoint without state_dict": (lambda w, c: fit(w, c, "--model.init_from", _saved(w / "nostate.ckpt", {"hello": 1})),
                                      r"nostate.ckpt: not a Lightning checkpoint \(no 'state_dict'\)"),
    "config file missing": (lambda w, c: ["fit", "--config", str(w / "nope.yaml")], r"--config .*nope.yaml: no such file"),
    "config not YAML": (lambda w, c: ["fit", "--config", shard(w, "c.yaml", b"model: [1, 2\n")],
                        r"--config .*c.yaml: not valid YAML at line 2, column 1"),
    "mixture.target missing": (lambda w, c: fit(w, c, "--mixture.target", str(w / "gone.ckpt")),
                               r"^mixalign fit: error: mixture.target: .*File is not readable: '.*gone.ckpt'"),
    "kl.mc_samples negative": (lambda w, c: fit(w, c, "--mixture.target", TARGET_NPZ, "--kl.mc_samples", "-3"),
                               r"mc_samples must be >= 0, got -3"),
    "text set of zero texts asked": (lambda w, c: ["textset", "--config", str(TINY), "--data.source", str(c), "--out",
                                                   str(w / "ts.jsonl"), "--n", "0"], r"n must be positive, got n = 0"),
}


def _saved(path: Path, obj) -> str:
    import torch

    torch.save(obj, path)
    return str(path)


@pytest.mark.parametrize("case", list(ROUND_TWO))
def test_bad_input_round_two(case, capsys, work, corpus):
    """Each case: exit 2, stderr one line matching the pattern (the file, field or value at fault), no output
    left. Mutations: without `OneLineErrors` the parse errors print the usage above several lines; without
    `output_path` the --out cases fail after the work (or with a FileExistsError traceback); without
    `check_config_files` the config cases do not name the file."""
    args = ROUND_TWO[case][0](work, corpus)
    before = set(outputs(work))
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and __import__("re").search(ROUND_TWO[case][1], err.strip()), err
    assert set(outputs(work)) == before, "a failed run left output behind"


# The issue's questionable cases and two found beside them: memory, allocation, a stray cache, messages.

def test_a_very_long_document_is_tokenized_in_bounded_pieces_to_the_same_tokens(tmp_path, monkeypatch):
    """One 50 MB line took 7.8 GB in `prepare`: the tokenizer keeps whole `Encoding` objects. Documents
    longer than `data.encode_chars` are tokenized in pieces cut before a space, so no tokenizer call sees
    more than that many characters, and the tokens are the whole document's (a byte-level BPE splits at
    spaces). Fails if `flush` encodes whole documents (the largest call is the long line) or a piece loses
    or repeats a character (the tokens differ)."""
    import random

    import numpy as np

    from mixalign.data import prepare as prep

    rng = random.Random(0)
    words = "the cat sat on a mat while seventeen dogs barked loudly at 42 parrots".split() + [
        "\n\n    indented", "two  spaces", "tab\there", "a\n", "   ", "é日本"]  # runs of whitespace: GPT-2's regex
    long_text = " ".join(rng.choice(words) for _ in range(6000))  # ~30k characters
    shard_path = tmp_path / "long.jsonl"
    docs = [long_text, "a short one", long_text[:900], "", *(f"short document {i}" for i in range(12))]
    shard_path.write_text("\n".join(json.dumps({"text": t, "meta": {"pile_set_name": "d"}}) for t in docs) + "\n")

    calls: list[int] = []
    real = prep.load_tokenizer

    class Spy:
        def __init__(self, tokenizer):
            self.tokenizer = tokenizer

        def encode_batch(self, texts, **kwargs):
            calls.append(sum(len(t) for t in texts))
            return self.tokenizer.encode_batch(texts, **kwargs)

        def __getattr__(self, name):
            return getattr(self.tokenizer, name)

    def tokens(limit: int) -> np.ndarray:
        config = prep.PrepareConfig(source=str(shard_path), tokenizer="demo-4k", bpe_vocab_size=None, domains=None,
                                    val_fraction=0.5, split_seed=3, skip_malformed=False, encode_chars=limit)
        data = prep.prepare(config, tmp_path / f"cache{limit}")
        return np.concatenate([data.tokens("d", split) for split in prep.SPLITS])

    whole = tokens(10**6)
    monkeypatch.setattr(prep, "load_tokenizer", lambda spec: Spy(real(spec)))
    pieces = tokens(1000)
    assert max(calls) <= 1000 and len(calls) > 26, calls[:5]
    np.testing.assert_array_equal(pieces, whole)
    text = "ab cd " * 50 + "x" * 250
    cut = list(prep.pieces(text, 64))
    assert "".join(cut) == text and max(map(len, cut)) <= 64 and list(prep.pieces("", 64)) == [""]
    assert list(prep.pieces("one two    three", 12)) == ["one two   ", " three"]  # not inside the run


def test_a_checkpoint_claiming_a_huge_model_is_refused_before_allocating_it(tmp_path):
    """A 263 KB checkpoint whose hyper-parameters claim a huge model allocated it (2.4 GB there) before the
    shapes were compared. Shapes are now checked on the meta device first: here the claim is 3 TB, which the
    allocator would refuse with a RuntimeError (a traceback) if the model were built first."""
    import torch

    from mixalign.errors import MixalignError
    from mixalign.model.checkpoint import gpt_from_checkpoint

    checkpoint = torch.load(REPO / "checkpoints" / "base.ckpt", weights_only=True)
    checkpoint["hyper_parameters"].update(n_layer=4, n_head=64, n_embd=131072)
    torch.save(checkpoint, tmp_path / "huge.ckpt")
    with pytest.raises(MixalignError, match=r"huge.ckpt: state dict is of another architecture: 'model.wte.weight'"):
        gpt_from_checkpoint(tmp_path / "huge.ckpt")


def test_a_hf_dir_whose_config_claims_a_huge_model_is_refused_before_allocating_it(work):
    """The same for a Hugging Face directory: config.json's shapes are compared with the weights' first."""
    import torch
    from safetensors.torch import save_file

    from mixalign.errors import MixalignError
    from mixalign.model.hf_gpt2 import gpt_from_hf

    hf = _hf_dir(work, "hf")
    config = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**config, "n_embd": 131072, "n_head": 64}))
    names = ["wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"] + [
        f"h.{i}.{part}.{kind}" for i in range(2) for part in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2",
                                                               "mlp.c_fc", "mlp.c_proj") for kind in ("weight", "bias")]
    save_file({name: torch.zeros(2, 2) for name in names}, str(hf / "model.safetensors"))
    with pytest.raises(MixalignError, match=r"hf: the weights do not fit its config.json: 'wte.weight' is \(2, 2\)"):
        gpt_from_hf(hf)


def test_a_parquet_shard_is_read_without_a_copy_in_the_datasets_cache(tmp_path, monkeypatch):
    """Reading Parquet through `datasets.Dataset.from_parquet` wrote a full copy of the file into the Hugging
    Face datasets cache (in the home directory). Record batches are read with pyarrow now: nothing is
    written, and the rows come in file order. Fails with `from_parquet` back (the cache fills)."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mixalign.data.reader import read_shard

    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    texts = [f"document number {i} " * 5 for i in range(3000)]
    pq.write_table(pa.table({"text": texts, "domain": ["a", "b"] * 1500}), tmp_path / "x.parquet", row_group_size=700)
    docs = list(read_shard(tmp_path / "x.parquet", domain_field="domain"))
    assert [d.text for d in docs] == texts and [d.domain for d in docs[:3]] == ["a", "b", "a"]
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))


def test_a_cut_parquet_shard_is_one_line_naming_it(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mixalign.data.reader import read_shard
    from mixalign.errors import DataError

    pq.write_table(pa.table({"text": ["x"] * 100, "domain": ["a"] * 100}), tmp_path / "x.parquet")
    (tmp_path / "x.parquet").write_bytes((tmp_path / "x.parquet").read_bytes()[:300])
    with pytest.raises(DataError, match=r"x.parquet: cannot read the Parquet file"):
        list(read_shard(tmp_path / "x.parquet", domain_field="domain"))


@pytest.mark.parametrize("kind", ["text set", "data shard"])
def test_a_zstd_file_cut_inside_a_frame_is_called_truncated(kind, tmp_path):
    """A `.jsonl.zst` cut inside a frame read as "empty file" (a text set) or "no documents" (a shard): the
    stream reader returns what it decoded and no error. `zstd_chunks` checks that the last frame ended.
    Fails with `stream_reader` back in either reader."""
    import zstandard

    from mixalign.data.reader import read_shard
    from mixalign.errors import DataError
    from mixalign.llvec.textset import load_textset

    if kind == "text set":
        whole = (REPO / "mixalign" / "assets" / "textsets" / "demo.jsonl.zst").read_bytes()
        read = load_textset
    else:
        lines = b"".join(json.dumps({"text": f"doc {i} " * 30, "meta": {"pile_set_name": "a"}}).encode() + b"\n"
                         for i in range(3000))
        whole = zstandard.ZstdCompressor().compress(lines)
        read = lambda path: list(read_shard(path))  # noqa: E731
    for cut in (100, len(whole) // 2, len(whole) - 5):
        path = tmp_path / f"cut{cut}.jsonl.zst"
        path.write_bytes(whole[:cut])
        with pytest.raises(DataError, match=rf"cut{cut}.jsonl.zst: truncated zstd data: the file ends inside a frame"):
            read(path)


def test_an_npz_of_random_bytes_is_called_not_an_npz(tmp_path):
    """numpy tries a file that is neither zip nor .npy as a pickle and reports "contains pickled (object)
    data", which sends a user looking for a pickle; the file is refused first as not a zip archive."""
    import os

    from mixalign.errors import DataError
    from mixalign.llvec.vectors import load_vector

    (tmp_path / "v.npz").write_bytes(os.urandom(4096))
    with pytest.raises(DataError, match=r"v.npz: not a log-likelihood vector \(an .npz is a zip archive"):
        load_vector(tmp_path / "v.npz")
