"""Shared fixtures: the synthetic corpus, the prepared demo data, the tiny target (helpers live in helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import TARGET_WEIGHTS, mixalign, tiny, write_corpus

# pytest-xdist runs two test files at once (pyproject's addopts): one thread per worker, inherited
# by every `mixalign` subprocess, so the two never fight over the 2 cores of CI.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ["OMP_NUM_THREADS"] = "1"

# The files that take longest, longest first: xdist hands out whole files in collection order (pyproject:
# --no-loadscope-reorder), so these start at once and no long file is left running alone at the end.
LONGEST_FIRST = ("test_headline.py", "test_mixture.py", "test_callback.py", "test_reliability.py", "test_cli.py",
                 "test_hf_families.py", "test_headline_scratch.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "00.jsonl")


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data_cache")


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory) -> Path:
    """Prepared demo data shared by every end-to-end test (preparing takes seconds)."""
    return tmp_path_factory.mktemp("demo_cache")


@pytest.fixture(scope="session")
def tiny_target(tmp_path_factory, demo_cache) -> Path:
    """A tiny target: the tiny config trained 60 steps on TARGET_WEIGHTS."""
    work = tmp_path_factory.mktemp("target")
    mixalign("fit", *tiny("--data.weights", TARGET_WEIGHTS, "--trainer.max_steps", "60",
                          "--trainer.default_root_dir", "run", cache=demo_cache), cwd=work)
    return work / "run" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
