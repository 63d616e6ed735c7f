"""`benchmarks/headline.py --quick --setting scratch`: the from-scratch setting's rows (its own file, so
that pytest-xdist runs it beside the continued setting's `test_headline.py`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_headline import METHODS, headline

pytestmark = pytest.mark.slow


def test_the_from_scratch_setting_has_its_rows(tmp_path, data_cache):
    report = headline(tmp_path, data_cache, "--target", "near", "--setting", "scratch", "--no-search", "--significance", "0")
    methods = [m for m in METHODS if m != "random-best"]
    assert list(report["results"]) == [*methods[:-1], "aligned-significance-0", "kd"]
    assert report["search"] == {} and report["runs"] == len(methods) + 1
    assert f"{len(methods) + 1} training runs" in (tmp_path / "headline-near-scratch.md").read_text()
    run = Path(report["results"]["aligned-significance-0"][0]["checkpoint"]).parents[1]
    assert yaml.safe_load((run / "config.yaml").read_text())["mixture"]["significance"] == 0
    start = {run["start_kl"] for runs in report["results"].values() for run in runs}
    assert len(start) == 1  # every method starts from the same random model (seed 1)
    # a random model is far further from the target than the base (exact KL 0.05 bits/byte: BENCHMARKS.md, Calibration)
    assert start.pop() > 10 * 0.05
    assert (tmp_path / "headline-near-scratch.md").exists()
