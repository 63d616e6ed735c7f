"""`benchmarks/headline.py --quick --setting scratch`: the from-scratch setting's rows (its own file, so
that pytest-xdist runs it beside the continued setting's `test_headline.py`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO
from test_headline import headline

pytestmark = pytest.mark.slow


def test_the_from_scratch_setting_has_its_rows(tmp_path, demo_cache):
    """Three rows of the table (`--methods`) and the significance row: the setting, not the methods, is checked
    here (test_headline.py runs every method)."""
    report = headline(tmp_path, demo_cache, "--target", "near", "--setting", "scratch", "--no-search",
                      "--significance", "0", "--methods", "uniform", "aligned", "kd")
    assert list(report["results"]) == ["uniform", "aligned", "aligned-significance-0", "kd"]  # kd: one untuned setting
    assert report["search"] == {} and report["runs"] == 4
    assert "4 training runs" in (tmp_path / "headline-near-scratch.md").read_text()
    run = Path(report["results"]["aligned-significance-0"][0]["checkpoint"]).parents[1]
    assert yaml.safe_load((run / "config.yaml").read_text())["mixture"]["significance"] == 0
    start = {run["start_kl"] for runs in report["results"].values() for run in runs}
    assert len(start) == 1  # every method starts from the same random model (seed 1)
    # a random model is far further from the target than the base (exact KL 0.05 bits/byte: BENCHMARKS.md, Calibration)
    assert start.pop() > 10 * 0.05
    assert (tmp_path / "headline-near-scratch.md").exists()


def test_a_method_not_in_the_table_stops_before_any_run(tmp_path, demo_cache):
    done = subprocess.run([sys.executable, "benchmarks/headline.py", "--quick", "--out", str(tmp_path), "--methods",
                           "uniform", "magic"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 1 and "--methods: no row ['magic'] in this table; its rows: uniform," in done.stderr
    assert not (tmp_path / "runs").exists()
