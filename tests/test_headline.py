"""`benchmarks/headline.py --quick`: the headline's script runs end to end, in both settings, and
its tables say what its runs measured (so the README's figures cannot rot or drift from the runs)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from helpers import REPO

from benchmarks._common import read_config

METHODS = ["uniform", "natural", "own-mixture", "aligned", "paper-direction", "paper-distance", "paper-rounds",
           "kd", "random-best"]


def headline(out, demo_cache, *args: str) -> dict:
    subprocess.run([sys.executable, "benchmarks/headline.py", "--quick", "--jobs", "1", "--out", str(out),
                    "--cache-dir", str(demo_cache), *args], cwd=REPO, check=True, capture_output=True, text=True,
                   env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"})
    return json.loads(next(out.glob("headline-*.json")).read_text())


pytestmark = pytest.mark.slow  # every test here reads one quick headline run (minutes)


@pytest.fixture(scope="module")
def continued(tmp_path_factory, demo_cache):
    out = tmp_path_factory.mktemp("headline")
    return out, headline(out, demo_cache, "--target", "near", "--downstream")


def test_every_method_is_measured_and_the_winners_are_the_searchs_best(continued):
    out, report = continued
    assert list(report["results"]) == METHODS
    search = report["search"]
    kd = {m: r["final_kl"] for m, r in search.items() if m.startswith("kd")}
    random = {m: r["final_kl"] for m, r in search.items() if m.startswith("random")}
    assert len(kd) == 2 and len(random) == 2  # --quick: a smaller grid and search
    assert report["winners"] == {"kd": min(kd, key=kd.get), "random-best": min(random, key=random.get)}
    # the rerun of the best random mixture trains on the very mixture the search found best
    assert report["results"]["random-best"][0]["weights"] == search[report["winners"]["random-best"]]["weights"]
    published = read_config("near.yaml")["data"]["weights"]
    assert report["results"]["own-mixture"][0]["weights"] == published
    paper = report["results"]["paper-direction"][0]["weights"]
    assert sum(paper.values()) == pytest.approx(1.0, abs=1e-5) and len(paper) == 8


def test_the_table_is_the_runs_figures(continued):
    out, report = continued
    table = (out / "headline-near.md").read_text().split("\n\n")[1]  # the method table (the downstream one follows)
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in table.splitlines()[2:]}
    assert list(rows) == list(report["results"])
    uniform = report["results"]["uniform"][0]["final_kl"]
    for method, (run,) in report["results"].items():
        cells = rows[method]
        assert float(cells[1]) == pytest.approx(run["final_kl"], abs=5e-5)  # one seed: the mean alone
        assert float(cells[4]) == pytest.approx(run["final_llvec_distance"], abs=5e-4)
        assert run["final_kl"] == run["kl_curve"][-1][1] and run["start_kl"] == run["kl_curve"][0][1]
        expected = "-" if method == "uniform" else ("yes" if run["final_kl"] < uniform else "no")
        assert cells[-1].strip(" |") == expected
    assert (out / "headline-near.png").stat().st_size > 10_000 and (out / "headline-near-map.png").exists()


def test_a_logged_figure_matches_an_independent_mixalign_kl(continued, tmp_path):
    """The table's exact KL, recomputed from the run's final checkpoint by `mixalign kl`."""
    out, report = continued
    run = report["results"]["kd"][0]
    written = tmp_path / "kl.json"
    subprocess.run([sys.executable, "-m", "mixalign", "kl", run["checkpoint"], str(REPO / "checkpoints" / "near.ckpt"),
                    "--n_texts", "16", "--out", str(written)], cwd=REPO, check=True, capture_output=True)
    pair = json.loads(written.read_text())["pairs"][0]
    assert pair["exact_a_to_b"]["bits_per_byte"] == pytest.approx(run["final_kl"], rel=1e-5)
    assert pair["exact_b_to_a"]["bits_per_byte"] == pytest.approx(run["final_reverse_kl"], rel=1e-5)


def test_the_downstream_table_covers_the_base_and_the_methods(continued):
    out, report = continued
    downstream = report["downstream"]
    assert set(downstream) == {"near", "base", "uniform", "natural", "aligned", "paper-direction", "kd",
                               "own-mixture", "random-best"}
    assert downstream["near"]["mean_gap"] == [0.0] and downstream["near"]["mean_agreement"] == [1.0]
    for name, scores in downstream.items():
        assert len(scores["mean_gap"]) == 1 and 0 <= scores["mean_gap"][0] <= 1
        assert scores["mean_gap"][0] == pytest.approx(sum(scores["task_gaps"][0].values()) / 5)
    assert re.search(r"^\| base \| [0-9.]+ \| [0-9.]+ \|$", (out / "headline-near.md").read_text(), re.M)
