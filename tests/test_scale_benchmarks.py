"""benchmarks/gpu_check.py runs end to end at tiny sizes on the CPU, and refuses plainly without CUDA.

(benchmarks/scale_smoke.py trains GPT-2 124M on the CPU: too slow for the suite; run it by hand.)
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from helpers import REPO

GPU_CHECK = REPO / "benchmarks" / "gpu_check.py"


def run_gpu_check(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([sys.executable, str(GPU_CHECK), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)


def recorded(value) -> bool:
    """A measured figure the benchmark wrote: a finite number (its size is the benchmark's business)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def positive(value) -> bool:
    return recorded(value) and value > 0


@pytest.mark.slow
def test_gpu_check_cpu_smoke_writes_every_part(tmp_path):
    result = run_gpu_check("--cpu-smoke", "--out", str(tmp_path), "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    record = json.loads((tmp_path / "gpu_check_cpu_smoke.json").read_text())
    for key in ("benchmark", "command", "machine", "commit", "code_hash", "settings", "training", "probe", "plan",
                "method_share", "scoring", "peak_gpu_memory_mib", "total_seconds"):
        assert key in record, key
    assert record["settings"]["mode"] == "cpu-smoke"
    for side in ("lightning", "plain"):
        run = record["training"][side]
        assert all(positive(run[k]) for k in ("tokens", "flops_per_token")), run
        assert all(recorded(run[k]) for k in ("seconds", "tokens_per_s")), run  # times are recorded, not judged
        assert run["mfu"] is None  # no peak FLOP/s for a CPU
    assert recorded(record["training"]["ratio_lightning_over_plain"])
    assert all(recorded(record["probe"][k]) for k in ("train_seconds", "seconds_per_step", "score_seconds"))
    assert positive(record["probe"]["n_texts"])
    plan = record["plan"]
    assert plan["domain_probes"] == 22 and plan["probes"] == plan["domain_probes"] + plan["candidate_probes"]
    share = record["method_share"]
    assert all(recorded(share[k]) for k in ("simple_share", "share_one_device", "wall_share_8_devices"))
    scoring = record["scoring"]
    assert all(recorded(scoring[k]) for k in ("one_at_a_time_seconds", "batched_seconds", "ratio_batched_over_one_at_a_time"))
    assert scoring["max_abs_diff_nats"] < 1e-3  # float32 on the CPU: the two paths agree
    assert recorded(record["total_seconds"])


def test_gpu_check_without_cuda_exits_2_with_one_line(tmp_path):
    result = run_gpu_check("--out", str(tmp_path), env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 2
    assert result.stderr.strip() == "gpu_check needs a CUDA device" and result.stdout == ""
    assert not list(tmp_path.iterdir())
