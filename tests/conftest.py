"""Shared test data: a small synthetic Pile-format corpus the tests make themselves."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

VOCABULARIES = {
    "alpha": "the cat sat on a mat and ate some fish while the dog slept".split(),
    "beta": "def return import class self lambda yield for in if else".split(),
    "gamma": "one two three plus minus equals times divided by seven".split(),
}


def write_corpus(path: Path, documents_per_domain: int = 60, seed: int = 0) -> Path:
    """Pile-format JSON lines: three domains of distinct word distributions."""
    rng = random.Random(seed)
    lines = []
    for domain, words in VOCABULARIES.items():
        for _ in range(documents_per_domain):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(60, 160)))
            lines.append(json.dumps({"text": text, "meta": {"pile_set_name": domain}}))
    rng.shuffle(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "00.jsonl")


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data_cache")
