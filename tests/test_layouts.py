"""Domains where the data keeps them: each layout prepares exactly what the Pile layout of the same documents does.

Layouts: the Pile (`meta.pile_set_name`), SlimPajama (`meta.redpajama_set_name`), Dolma (top-level
`source`), a Parquet `domain` column (`data.domain_field`), and one folder per domain (`data.source`
as `{domain: path or glob}`). Then one test per bad layout, checking the error says where to look.
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
from helpers import TINY, mixalign, write_corpus

from mixalign.cli import main
from mixalign.data.datamodule import PileMixtureDataModule
from mixalign.errors import DataError
from mixalign.llvec.textset import build_textset


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> list[tuple[str, str]]:
    """(text, domain) of the shared synthetic corpus (helpers.write_corpus), in file order."""
    path = write_corpus(tmp_path_factory.mktemp("pile") / "00.jsonl", documents_per_domain=40)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [(r["text"], r["meta"]["pile_set_name"]) for r in records]


def write_lines(path, records) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def prepared_domains(tmp_path, source, **options) -> dict:
    """The manifest's per-domain counts for `source`, prepared into a fresh cache, and a digest of every
    domain's training and validation token ids: equal digests mean the same tokens in the same order."""
    dm = PileMixtureDataModule(source=source, cache_dir=str(tmp_path / "cache"), **options)
    dm.prepare_data()
    dm.setup("fit")
    arrays = {f"{d}/{split}": np.asarray(dm.data.tokens(d, split)) for d in dm.domains for split in ("train", "val")}
    return {"counts": dm.data.manifest["domains"], "tokens": {k: digest(a) for k, a in arrays.items()},
            "token_multisets": {k: digest(np.sort(a)) for k, a in arrays.items()}}


def digest(tokens: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(tokens).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def pile_domains(documents, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("pile_layout")
    source = write_lines(tmp / "pile.jsonl", [{"text": t, "meta": {"pile_set_name": d}} for t, d in documents])
    return prepared_domains(tmp, source)


def test_slimpajama_layout_reads_its_nested_field(documents, pile_domains, tmp_path):
    source = write_lines(tmp_path / "slim.jsonl", [{"text": t, "meta": {"redpajama_set_name": d}} for t, d in documents])
    assert prepared_domains(tmp_path, source, domain_field="meta.redpajama_set_name") == pile_domains


def test_dolma_layout_reads_a_top_level_field(documents, pile_domains, tmp_path):
    source = write_lines(tmp_path / "dolma.jsonl", [{"id": i, "text": t, "source": d} for i, (t, d) in enumerate(documents)])
    assert prepared_domains(tmp_path, source, domain_field="source") == pile_domains


def test_folder_per_domain_layout_takes_the_domain_from_the_mapping(documents, pile_domains, tmp_path):
    source = {}
    for domain in sorted({d for _, d in documents}):
        for part in range(2):  # two shards per folder, no domain field in the records
            write_lines(tmp_path / domain / f"{part}.jsonl", [{"text": t} for t, d in documents[part::2] if d == domain])
        source[domain] = str(tmp_path / domain) if domain != "gamma" else str(tmp_path / domain / "*.jsonl")
    folders = prepared_domains(tmp_path, source)
    # The documents come in another order (shard by shard), so the same tokens, not the same sequence.
    assert folders["counts"] == pile_domains["counts"] and folders["token_multisets"] == pile_domains["token_multisets"]


def test_parquet_layout_reads_a_domain_column(documents, pile_domains, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"text": [t for t, _ in documents], "domain": [d for _, d in documents]})
    pq.write_table(table, tmp_path / "rows.parquet")
    assert prepared_domains(tmp_path, str(tmp_path / "rows.parquet"), domain_field="domain") == pile_domains


def test_textset_reads_the_same_domains_from_every_layout(documents, tmp_path):
    pile = write_lines(tmp_path / "pile.jsonl", [{"text": t, "meta": {"pile_set_name": d}} for t, d in documents])
    dolma = write_lines(tmp_path / "dolma.jsonl", [{"text": t, "source": d} for t, d in documents])
    split = {"n": 12, "seed": 0, "split_seed": 0, "val_fraction": 0.5, "min_bytes": 64}
    expected = build_textset(pile, **split)
    assert build_textset(dolma, domain_field="source", **split).hash == expected.hash
    folders = {d: write_lines(tmp_path / d / "0.jsonl", [{"text": t} for t, e in documents if e == d]) for d in ("alpha", "beta", "gamma")}
    assert build_textset(folders, **split).meta["available"] == expected.meta["available"]  # order differs, candidates not


def test_default_domain_field_keeps_the_cache_key(documents, tmp_path):
    source = write_lines(tmp_path / "pile.jsonl", [{"text": t, "meta": {"pile_set_name": d}} for t, d in documents])
    default = PileMixtureDataModule(source=source, cache_dir=str(tmp_path / "cache"))
    named = PileMixtureDataModule(source=source, cache_dir=str(tmp_path / "cache"), domain_field="meta.pile_set_name")
    default.setup("fit")
    named.setup("fit")
    assert named.data.root == default.data.root
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_record_without_the_domain_field_names_file_line_and_field(tmp_path):
    source = write_lines(tmp_path / "slim.jsonl", [{"text": "a", "meta": {"redpajama_set_name": "x"}}, {"text": "b", "meta": {}}])
    with pytest.raises(DataError, match=r"slim\.jsonl:2: missing string field 'meta\.redpajama_set_name'"):
        prepared_domains(tmp_path, source, domain_field="meta.redpajama_set_name")


def test_listed_domain_without_documents_is_named(documents, tmp_path):
    source = write_lines(tmp_path / "dolma.jsonl", [{"text": t, "source": d} for t, d in documents])
    with pytest.raises(DataError, match=r"data\.domains: unknown domain\(s\) \['omega'\]; the data has: \['alpha', 'beta', 'gamma'\]"):
        prepared_domains(tmp_path, source, domain_field="source", domains=["alpha", "omega"])


def test_mapping_entry_matching_nothing_names_domain_and_pattern(documents, tmp_path):
    alpha = write_lines(tmp_path / "alpha" / "0.jsonl", [{"text": t} for t, d in documents if d == "alpha"])
    pattern = str(tmp_path / "beta" / "*.jsonl")
    with pytest.raises(DataError, match=rf"data\.source domain 'beta': pattern '{re.escape(pattern)}' matches no data"):
        prepared_domains(tmp_path, {"alpha": alpha, "beta": pattern})


@pytest.mark.slow
def test_fit_trains_on_the_folder_layout_with_its_mapping(documents, tmp_path):
    """The folder layout through `mixalign fit` (a tiny model, 4 steps): the mapping's domains are the
    ones sampled, weighted as asked (the per-domain token counters of the run's last step)."""
    for domain in ("alpha", "beta", "gamma"):
        write_lines(tmp_path / "data" / domain / "0.jsonl", [{"text": t} for t, d in documents if d == domain])
    out = mixalign("fit", "--config", str(TINY), "--data.source", "{alpha: data/alpha, beta: data/beta, gamma: data/gamma}",
                   "--data.tokenizer", "null", "--data.bpe_vocab_size", "300", "--data.cache_dir", "cache",
                   "--data.weights", "{alpha: 2, beta: 1, gamma: 1}", "--trainer.max_steps", "4",
                   "--trainer.default_root_dir", "run", cwd=tmp_path).stdout
    (summary,) = [line for line in out.splitlines() if line.startswith("SUMMARY")]
    assert summary.endswith("weights: alpha 0.500, beta 0.250, gamma 0.250"), summary


def field_layout(layout: str, documents, tmp_path) -> tuple[str, str]:
    """(data.source, data.domain_field) of the documents written in a layout that keeps domains in a field."""
    if layout == "parquet":
        pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
        pq.write_table(pa.table({"text": [t for t, _ in documents], "domain": [d for _, d in documents]}),
                       tmp_path / "rows.parquet")
        return str(tmp_path / "rows.parquet"), "domain"
    if layout == "slimpajama":
        records = [{"text": t, "meta": {"redpajama_set_name": d}} for t, d in documents]
        return write_lines(tmp_path / "slim.jsonl", records), "meta.redpajama_set_name"
    return write_lines(tmp_path / "dolma.jsonl", [{"text": t, "source": d} for t, d in documents]), "source"


@pytest.mark.parametrize("layout", ["slimpajama", "dolma", "parquet"])
def test_fit_trains_on_each_field_layout(layout, documents, tmp_path, capsys):
    """Each layout that keeps the domain in a field through `mixalign fit` (in process, 2 steps): the
    field's domains are the ones sampled, weighted as asked (mutation: a reader that ignores
    data.domain_field finds no `meta.pile_set_name` and stops)."""
    source, field = field_layout(layout, documents, tmp_path)
    main(["fit", "--config", str(TINY), "--data.source", source, "--data.domain_field", field, "--data.tokenizer", "null",
          "--data.bpe_vocab_size", "300", "--data.cache_dir", str(tmp_path / "cache"), "--data.weights",
          "{alpha: 1, beta: 1, gamma: 2}", "--trainer.max_steps", "2", "--trainer.default_root_dir", str(tmp_path / "run")])
    (summary,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("SUMMARY")]
    assert summary.endswith("weights: alpha 0.250, beta 0.250, gamma 0.500"), summary


@pytest.mark.slow
def test_prepare_command_on_the_folder_layout_prints_the_domain_table(documents, tmp_path):
    for domain in ("alpha", "beta", "gamma"):
        write_lines(tmp_path / "data" / domain / "0.jsonl", [{"text": t} for t, d in documents if d == domain])
    source = "{alpha: data/alpha, beta: data/beta, gamma: 'data/gamma/*.jsonl'}"
    out = mixalign("prepare", "--data.source", source, "--data.cache_dir", str(tmp_path / "cache"), cwd=tmp_path).stdout
    rows = {line.split()[0]: [int(c) for c in line.split()[1:]] for line in out.splitlines()[2:-1]}
    assert sorted(rows) == ["alpha", "beta", "gamma"]
    assert all(len(cells) == 4 and cells[0] + cells[2] == 40 for cells in rows.values())
