"""Shared fixtures: the synthetic corpus, the prepared demo data, the tiny target (helpers live in helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from filelock import FileLock
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


def shared_dir(tmp_path_factory, name: str) -> Path:
    """A folder every xdist worker of this session shares (one build of an expensive fixture, not one per worker)."""
    root = tmp_path_factory.getbasetemp()
    path = (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / name
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory) -> Path:
    """Prepared demo data shared by every end-to-end test and worker (preparers may run at once: the cache
    is built in a temporary folder and renamed, tests/test_reliability.py)."""
    return shared_dir(tmp_path_factory, "demo_cache")


@pytest.fixture(scope="session")
def tiny_target(tmp_path_factory, demo_cache) -> Path:
    """A tiny target: the tiny config trained 60 steps on TARGET_WEIGHTS (by the first worker to ask)."""
    work = shared_dir(tmp_path_factory, "target")
    checkpoint = work / "run" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    with FileLock(str(work) + ".lock"):
        if not checkpoint.exists():
            mixalign("fit", *tiny("--data.weights", TARGET_WEIGHTS, "--trainer.max_steps", "60",
                                  "--trainer.default_root_dir", "run", cache=demo_cache), cwd=work)
    return checkpoint
