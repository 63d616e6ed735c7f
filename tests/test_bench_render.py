"""The throughput scripts' BENCHMARKS.md blocks say what their results files hold: each renderer on a
record whose figures are known (so no figure there is typed by hand or rounded into another)."""

from __future__ import annotations

import importlib
import sys

import pytest
from helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
MACHINE = {"date_utc": "2026-12-07T23:50:00Z", "nproc": 2, "cpu_model": "AMD EPYC", "torch": "2.13.0+cpu",
           "torch_threads": 1, "load_average_at_start": 0.12}


def script(name: str):
    return importlib.import_module(name)


def record(**fields) -> dict:
    return {"command": "python benchmarks/x.py", "machine": MACHINE, **fields}


@pytest.mark.parametrize("lightning, met", [(7400.0, "met"), (7000.0, "not met")])
def test_training_block_gives_the_medians_their_ratio_and_the_verdict(lightning, met):
    runs = [{"side": "lightning", "tokens_per_s": lightning}, {"side": "plain", "tokens_per_s": 7500.0}]
    text = script("bench_train").render(record(
        settings={"runs_each": 1, "warmup_steps": 10, "timed_steps": 40, "batch_size": 16, "model": {"block_size": 128}},
        summary={"lightning_median_tokens_per_s": lightning, "plain_median_tokens_per_s": 7500.0,
                 "ratio_lightning_over_plain": lightning / 7500, "target_ratio": 0.95, "max_final_loss_difference": 0.0,
                 "peak_rss_mib": {"lightning": 707.0, "plain": 698.0}}, runs=runs))
    assert f"| lightning | {lightning:,.0f} | {lightning:.0f} | 707 MiB |" in text
    assert f"**{lightning / 7500:.3f}**" in text and f"**{met}**" in text
    assert "load average 0.12 when it started" in text and "2026-12-07 23:50:00 UTC" in text


def test_scoring_block_gives_each_thread_count_and_both_verdicts():
    run = {"threads": 1, "seconds": {"one_at_a_time": [20.5, 20.0], "batched": [17.5, 18.0]},
           "median_seconds": {"one_at_a_time": 20.25, "batched": 17.75}, "texts_per_s": {"one_at_a_time": 49.4, "batched": 56.3},
           "ratio_batched_over_one_at_a_time": 1.14, "max_possible_ratio": 1.81, "max_abs_diff_nats": 3.6e-6,
           "matmul_gflops": 101.8, "one_at_a_time_gflops": 67.4, "batched_gflops": 64.9, "lower_bound_seconds": 11.3}
    text = script("bench_scoring").render(record(
        settings={"n_texts": 1000, "windows": 3926, "window_positions": 501813, "scored_positions": 283667, "repeats": 2,
                  "flops": {"needed": 1.152e12, "reference": 1.381e12}},
        summary={"runs": [run], "peak_rss_mib": {"after_setup": 305.0, "end": 421.0}, "target_ratio": 4.0,
                 "target_max_diff_nats": 1e-4}))
    assert "| 1 | 49.4 (20.50, 20.00 s) | 56.3 (17.50, 18.00 s) | **1.14x** | 1.81x | 3.6e-06 nats |" in text
    assert "Max |difference| <= 1e-04 nats: **met**; batched >= 4x one at a time: **not met**." in text


def test_data_block_gives_the_rates_and_their_ratios_to_training():
    text = script("bench_data").render(record(
        settings={"repeats": 3, "batches": 2000, "batch_size": 16, "block_size": 128, "domains": 8, "weights": "uniform"},
        summary={"sampler_samples_per_s": 250000.0, "dataloader_samples_per_s": 220000.0, "training_samples_per_s": 58.0,
                 "training_rate_source": "bench_train.json", "ratio_sampler_over_training": 250000 / 58,
                 "ratio_dataloader_over_training": 220000 / 58, "sampler_ms_per_batch": 0.064, "target_ratio": 20.0,
                 "target_met": True, "peak_rss_mib": {"end": 450.0}}))
    assert "| `MixtureBatches.batch` | 250,000 (0.064 ms per batch) | **4,310x** |" in text
    assert "| training consumption | 58.0 | 1x |" in text and "Target >= 20x: **met**" in text


def test_weights_block_gives_the_solver_calls_and_the_probe_parts():
    text = script("bench_weights").render(record(
        solver={"N": 10000, "K": 22, "all_s": {"solve_direction": [0.1] * 5},
                "median_s": {"solve_direction": 0.0016, "solve_distance": 0.0037, "diagnose": 0.002}},
        probes={"probe_steps": 40, "n_texts": 1000, "probes": [{"domain": "bible"}, {"domain": "code"}],
                "projected_alignment_probes": 9},
        summary={"solver_target_met": True, "solver_target_s": 1.0, "probe_train_s": 10.9, "probe_score_s": 15.4,
                 "probe_s": 26.3, "projected_alignment_s": 254.4,
                 "peak_rss_mib": {"after_solver": 451.0, "after_probes": 766.0}}))
    assert "| `solve_distance` | 0.0037 |" in text and "Target < 1 s: **met**." in text
    assert "| **per probe** | **26.3** |" in text and "the median of 2 probes (bible, code)" in text
