"""Shared test data: a small synthetic Pile-format corpus the tests make themselves."""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import pytest

# pytest-xdist runs two test files at once (pyproject's addopts): one thread per worker, inherited
# by every `mixalign` subprocess, so the two never fight over the 2 cores of CI.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ["OMP_NUM_THREADS"] = "1"

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


# -- end-to-end helpers: run `mixalign` in a subprocess, read TensorBoard scalars ---------------------
import subprocess  # noqa: E402
import sys  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
DEMO_DOMAINS = ["bible", "code", "dictionary", "docs", "email", "legal", "math", "quotes"]
TARGET_WEIGHTS = "{code: 0.45, math: 0.45, bible: 0.1}"  # the tiny target's mixture: two dominant domains


def mixalign(*args: str, cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore", **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "mixalign", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    if check and result.returncode != 0:
        raise AssertionError(f"mixalign {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def trained_probes(stdout: str) -> int:
    """The count in the "probes trained this time: N" line a mixture computation prints."""
    (count,) = re.findall(r"probes trained this time: (\d+)", stdout)
    return int(count)


def reported_metric(stdout: str, name: str) -> float:
    """A metric from the table `mixalign validate` prints."""
    for line in stdout.splitlines():
        cells = line.replace("│", " ").split()
        if len(cells) == 2 and cells[0] == name:
            return float(cells[1])
    raise AssertionError(f"{name} not in output:\n{stdout[-2000:]}")


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory) -> Path:
    """Prepared demo data shared by every end-to-end test (preparing takes seconds)."""
    return tmp_path_factory.mktemp("demo_cache")


def tiny(*extra: str, cache: Path) -> list[str]:
    return ["--config", str(TINY), "--data.cache_dir", str(cache), *extra]


@pytest.fixture(scope="session")
def tiny_target(tmp_path_factory, demo_cache) -> Path:
    """A tiny target: the tiny config trained 60 steps on TARGET_WEIGHTS."""
    work = tmp_path_factory.mktemp("target")
    mixalign("fit", *tiny("--data.weights", TARGET_WEIGHTS, "--trainer.max_steps", "60",
                          "--trainer.default_root_dir", "run", cache=demo_cache), cwd=work)
    return work / "run" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
