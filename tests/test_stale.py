"""`benchmarks/stale.py`: a published figure is listed once the code it measured changes, and not before."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from helpers import REPO

sys.path.insert(0, str(REPO))

from benchmarks._common import code_hash, replace_section  # noqa: E402
from benchmarks.stale import stale  # noqa: E402


def checkout(root: Path) -> Path:
    """A checkout in miniature: code, a config, a results file measured on that code, a doc citing it."""
    (root / "mixalign").mkdir()
    (root / "mixalign" / "method.py").write_text("THRESHOLD = 0.1\n")
    (root / "configs").mkdir()
    (root / "configs" / "pile.yaml").write_text("mixture: {}\n")
    (root / "benchmarks" / "results").mkdir(parents=True)
    result = root / "benchmarks" / "results" / "robustness.json"
    result.write_text(json.dumps({"commit": "abc1234", "code_hash": code_hash(root)}))
    (root / "BENCHMARKS.md").write_text("# Results\n<!-- ROBUSTNESS:BEGIN -->\n<!-- ROBUSTNESS:END -->\n"
                                        "See benchmarks/results/robustness.png.\n")
    replace_section(root / "BENCHMARKS.md", "ROBUSTNESS", "| 59% |", result)
    return root


def test_fresh_figures_list_nothing(tmp_path):
    root = checkout(tmp_path)
    assert "<!-- measured: " in (root / "BENCHMARKS.md").read_text() and "code " + code_hash(root) in (
        root / "BENCHMARKS.md").read_text()
    assert stale(root) == []


def test_a_change_to_the_code_or_a_config_makes_the_block_and_its_results_file_stale(tmp_path):
    """Fails if the hash skips configs/ or the block's hash is not compared (a mutation of either)."""
    root = checkout(tmp_path)
    (root / "configs" / "pile.yaml").write_text("mixture: {min_gain: 0.2}\n")
    found = stale(root)
    assert len(found) == 2
    assert found[0].startswith("BENCHMARKS.md ROBUSTNESS: measured at abc1234 on other code")
    assert found[1].startswith("benchmarks/results/robustness.json (cited in the docs): measured on other code")


def test_a_block_without_provenance_and_a_pycache_file(tmp_path):
    root = checkout(tmp_path)
    (root / "mixalign" / "__pycache__").mkdir()
    (root / "mixalign" / "__pycache__" / "method.cpython-312.pyc").write_bytes(b"\0")  # not code: ignored
    assert stale(root) == []
    doc = root / "BENCHMARKS.md"
    doc.write_text(doc.read_text() + "<!-- TYPED:BEGIN -->\n| 42% |\n<!-- TYPED:END -->\n")
    assert stale(root) == ["BENCHMARKS.md TYPED: records no code hash (measured before hashes were kept); "
                           "rerun its script"]
    doc.write_text(doc.read_text() + "<!-- EMPTY:BEGIN -->\n<!-- EMPTY:END -->\n")  # not filled yet: no figure
    assert len(stale(root)) == 1


def git(root: Path, *args: str) -> str:
    import subprocess

    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                          capture_output=True, text=True).stdout.strip()


def committed_checkout(root: Path) -> Path:
    """A git checkout whose benchmark imports mixalign.measured (and runs `python -m mixalign`), not .other;
    its results file was measured on the commit."""
    for name, text in {"__init__.py": "", "measured.py": "from mixalign import helper\n", "helper.py": "X = 1\n",
                       "other.py": "Y = 1\n", "__main__.py": "from mixalign import cli\n", "cli.py": "Z = 1\n", "named.py": "W = 1\n"}.items():
        (root / "mixalign").mkdir(exist_ok=True)
        (root / "mixalign" / name).write_text(text)
    (root / "configs").mkdir()
    (root / "configs" / "pile.yaml").write_text("mixture: {}\n")
    (root / "benchmarks" / "results").mkdir(parents=True)
    (root / "benchmarks" / "bench.py").write_text(
        "import subprocess, sys\nfrom mixalign.measured import helper\n"
        "subprocess.run([sys.executable, '-m', 'mixalign', 'fit'])\nMEASURES = ('mixalign.named',)\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-qm", "code")
    result = root / "benchmarks" / "results" / "bench.json"
    result.write_text(json.dumps({"commit": git(root, "rev-parse", "--short", "HEAD"), "code_hash": code_hash(root),
                                  "command": "python benchmarks/bench.py --flag"}))
    (root / "BENCHMARKS.md").write_text("<!-- BENCH:BEGIN -->\n<!-- BENCH:END -->\nbenchmarks/results/bench.json\n")
    replace_section(root / "BENCHMARKS.md", "BENCH", "| 1 |", result)
    return root


def test_only_the_code_a_committed_run_measured_can_make_it_stale(tmp_path):
    """Fails if the closure misses a transitive import (helper), the `-m mixalign` run (cli), a module
    named in MEASURES (named), or if it is ignored (other.py would then make the figures stale)."""
    root = committed_checkout(tmp_path)
    assert stale(root) == []
    (root / "mixalign" / "other.py").write_text("Y = 2\n")  # not imported by the benchmark
    assert stale(root) == []
    for changed in ("helper.py", "cli.py", "named.py"):
        path = root / "mixalign" / changed
        before = path.read_text()
        path.write_text(before + "# changed\n")
        assert [line.split(":")[0] for line in stale(root)] == ["BENCHMARKS.md BENCH",
                                                               "benchmarks/results/bench.json (cited in the docs)"]
        path.write_text(before)
