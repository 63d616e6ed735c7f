"""Helpers the tests share: a synthetic Pile-format corpus, the tiny config, and running `mixalign` end to end."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import logged_scalars as scalars  # noqa: E402, F401  (one reader of TensorBoard events)

TINY = REPO / "configs" / "tiny.yaml"
DEMO_DOMAINS = ["bible", "code", "dictionary", "docs", "email", "legal", "math", "quotes"]
TARGET_WEIGHTS = "{code: 0.45, math: 0.45, bible: 0.1}"  # the tiny target's mixture: two dominant domains
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


def mixalign(*args: str, cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m mixalign ARGS` in a subprocess from this checkout; a failure shows its output."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore", **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "mixalign", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    if check and result.returncode != 0:
        raise AssertionError(f"mixalign {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


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


def tiny(*extra: str, cache: Path) -> list[str]:
    """Arguments of a run on configs/tiny.yaml with the shared prepared-data cache."""
    return ["--config", str(TINY), "--data.cache_dir", str(cache), *extra]
