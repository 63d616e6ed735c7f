"""Probes dealt across processes: DDP in fit and torchrun for `mixalign weights` give one process's weights."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from helpers import DEMO_DOMAINS, REPO, mixalign, tiny
from test_mixture import mixture_args

pytestmark = pytest.mark.slow
THREADS = {"OMP_NUM_THREADS": "1"}  # every process does the same arithmetic (other counts agree to about 1e-7)


def probe_args(target, cache) -> list[str]:
    return tiny(*mixture_args(target, "--mixture.n_texts", "24", "--mixture.probe_steps", "4"),
                "--trainer.max_steps", "2", cache=cache)


@pytest.fixture(scope="module")
def single(tmp_path_factory, demo_cache, tiny_target) -> dict:
    """`mixalign weights` on one process: the reference every multi-process run must equal."""
    work = tmp_path_factory.mktemp("single")
    mixalign("weights", *probe_args(tiny_target, demo_cache), "--mixture.cache_dir", "one", "--out", "one.yaml",
             cwd=work, env=THREADS)
    return yaml.safe_load((work / "one.yaml").read_text())


def assert_same_result_dealt_round_robin(single: dict, multi: dict) -> None:
    assert multi["chosen"] == single["chosen"] and multi["weights"] == pytest.approx(single["weights"], abs=1e-9)
    measured = {c["name"]: c["exact_to_target"] for c in multi["diagnostics"]["candidates"]}
    assert measured == pytest.approx({c["name"]: c["exact_to_target"] for c in single["diagnostics"]["candidates"]},
                                     abs=1e-9)
    by_rank = multi["diagnostics"]["probes_trained_by_rank"]
    candidates = [f"candidate {c['name']}" for c in single["diagnostics"]["candidates"]]
    every = ["base", *DEMO_DOMAINS, *candidates]
    assert sorted(by_rank) == [0, 1] and sorted(by_rank[0] + by_rank[1]) == sorted(every)
    assert by_rank[0][:2] == ["base", DEMO_DOMAINS[1]] and by_rank[1][:2] == [DEMO_DOMAINS[0], DEMO_DOMAINS[2]]
    assert single["diagnostics"]["probes_trained_by_rank"] == {0: every}


def test_ddp_fit_spreads_the_probes_across_ranks_and_computes_the_same_weights(single, tmp_path, demo_cache,
                                                                                tiny_target):
    """Two processes (gloo) deal the probes round-robin and gather them: one process's weights, to 1e-9."""
    mixalign("fit", *probe_args(tiny_target, demo_cache), "--data.weights", "aligned", "--mixture.cache_dir", "two",
             "--kl.n_texts", "24", "--trainer.devices", "2", "--trainer.strategy", "ddp",
             "--trainer.default_root_dir", "ddp", cwd=tmp_path, env=THREADS)
    ddp = yaml.safe_load((tmp_path / "ddp/lightning_logs/version_0/mixture/round-0.yaml").read_text())
    assert_same_result_dealt_round_robin(single, ddp)


def test_weights_under_torchrun_spreads_the_probes_and_writes_one_file(single, tmp_path, demo_cache, tiny_target):
    """torchrun starts the processes; the trainer's strategy joins them; rank 0 alone writes the file."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "mixalign", "weights", *probe_args(tiny_target, demo_cache), "--mixture.cache_dir", "two",
               "--out", "two.yaml", "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore", **THREADS}
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    stages = (1 + len(DEMO_DOMAINS), len(single["diagnostics"]["candidates"]))  # base and domains, then candidates
    dealt = f"by rank: 0: {sum((n + 1) // 2 for n in stages)}, 1: {sum(n // 2 for n in stages)}"  # in turn per stage
    assert run.stdout.count("weights written to two.yaml") == 1 and dealt in run.stdout
    assert_same_result_dealt_round_robin(single, yaml.safe_load((tmp_path / "two.yaml").read_text()))


def test_weights_on_two_devices_without_a_launcher_says_how_to_launch(tmp_path, demo_cache, tiny_target):
    out = mixalign("weights", *probe_args(tiny_target, demo_cache), "--out", "w.yaml", "--trainer.devices", "2",
                   "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu", cwd=tmp_path, check=False)
    assert out.returncode == 2 and "needs its processes launched by torchrun or SLURM" in out.stderr
    assert not (tmp_path / "w.yaml").exists()
