"""README's first command, timed as written on a fresh clone: wall time, CPU time, its SUMMARY line.

Clones this repository (HEAD) into a temporary directory, runs the first ```sh block of README.md
there with bash exactly as written (it installs mixalign from that clone into the current Python
and runs the main job on the demo data), and writes results/main_job.json and README's MAINJOB
section. Afterwards mixalign is installed from the clone: reinstall your checkout
(`pip install -e .`) if you work in it.

    python benchmarks/main_job.py                      # --keep-run DIR: keep the run's folder (for screenshots)
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import code_state, machine, replace_section, write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MEASURES = ("mixalign.__main__",)  # README's command runs the whole CLI (benchmarks/stale.py reads this)


def first_command() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    return readme.split("```sh\n", 1)[1].split("```", 1)[0].strip()


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def wait_for_quiet(limit_s: float = 300.0, quiet: float = 0.5) -> float:
    """The 1-minute load average once it falls below `quiet` (a job that just ended still weighs on it),
    or after `limit_s`: the figure is only a timing of the command on quiet cores."""
    deadline = time.time() + limit_s
    while load_average() >= quiet and time.time() < deadline:
        time.sleep(10)
    return load_average()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep-run", help="copy the clone's runs/ folder here before the clone is removed")
    args = parser.parse_args()
    command = first_command()
    with tempfile.TemporaryDirectory(prefix="mixalign-main-job-") as work:
        clone = Path(work) / "mixalign"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        state = code_state(clone)
        commit = state["commit"]
        load_before = wait_for_quiet()
        start = time.time()
        result = subprocess.run(["bash", "-c", command], cwd=clone, capture_output=True, text=True)
        wall = time.time() - start
        if args.keep_run and (clone / "runs").is_dir():
            shutil.copytree(clone / "runs", args.keep_run, dirs_exist_ok=True)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"the first command failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    (summary,) = re.findall(r"^SUMMARY: .*$", result.stdout, flags=re.M)
    cost = re.findall(r"^cost: .*$", result.stdout, flags=re.M)  # the mixture's own account, with its minutes
    record = {"readme_command": command, **state, "wall_seconds": wall,
              "cpu_seconds": usage.ru_utime + usage.ru_stime, "load_average_before": load_before,
              "summary": summary, "method_cost": cost[0] if cost else None, "machine": machine()}
    result = write_result("main_job", record)
    m = record["machine"]
    text = (f"Measured by `python benchmarks/main_job.py` (a fresh clone of {commit}, the command above as "
            f"written): **{wall / 60:.1f} min wall, {record['cpu_seconds'] / 60:.1f} CPU-min** on {m['nproc']} cores "
            f"({m['cpu_model']}, load average {load_before:.1f} when it started: "
            f"{'nothing else running' if load_before < 0.5 else 'other jobs on the machine'}), "
            f"pip install included. It printed:\n\n```\n{summary}\n{record['method_cost'] or ''}\n```")
    replace_section(REPO / "README.md", "MAINJOB", text, result)
    print(text)


if __name__ == "__main__":
    main()
