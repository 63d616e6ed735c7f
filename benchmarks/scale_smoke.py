"""GPT-2 scale on the CPU: `configs/pile-gpt2.yaml` (GPT-2 124M, block 1024, the gpt2 tokenizer) for a few
steps through the real CLI, a checkpoint half-way and a resume from it.

What runs: `python -m mixalign fit --config <pile-gpt2.yaml>` with dotted overrides, where <pile-gpt2.yaml> is a
copy of configs/pile-gpt2.yaml with its three /data paths replaced (`smoke_config`: the parser refuses a
missing path in a config file even when the command line overrides it): the demo corpus
(`--data.source demo`) tokenized with gpt2, batch 1 without gradient accumulation, one CPU device at
32-bit precision with no DDP and no torch.compile (the config's GPU settings), the mixture's probes
shortened (1 step each, 8 texts of the demo text set) and the target a small random Hugging Face GPT-2
(2 layers, 64 wide, context 1024, GPT-2's vocabulary and tokenizer) that this script builds in a temp
dir. The run stops at step N/2 with a checkpoint, then `--ckpt_path last` resumes it to step N.

Recorded (`benchmarks/results/scale_smoke.json`): seconds per training step from the TensorBoard event
times of `train/loss` (logged every step; intervals within one process only) and, beside it, each
process's wall time over its steps (startup, data preparation and the mixture's probes included);
the peak RSS of the child processes; the step the resume reached; the SUMMARY line; and the method's
cost account for pile-gpt2.yaml's real max_steps (benchmarks/cost_account.py).

    python benchmarks/scale_smoke.py              # N = 4 steps, the config's selection (measured)
    python benchmarks/scale_smoke.py --quick      # N = 2, `selection: solver` (the domain probes only)
    python benchmarks/scale_smoke.py --write      # and fill BENCHMARKS.md's SCALE_SMOKE section
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import REPO, RESULTS, median, replace_section, write_result  # noqa: E402

CONFIG = REPO / "configs" / "pile-gpt2.yaml"
TARGET_SHAPE = dict(n_layer=2, n_head=2, n_embd=64, n_positions=1024, vocab_size=50257)


def build_target(path: Path) -> Path:
    """A small random Hugging Face GPT-2 with GPT-2's vocabulary and tokenizer (eos <|endoftext|>)."""
    import torch
    import transformers

    from mixalign.data.tokenizer import EOT, load_tokenizer

    torch.manual_seed(3)
    config = transformers.GPT2Config(**TARGET_SHAPE, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(path)
    transformers.PreTrainedTokenizerFast(tokenizer_object=load_tokenizer("gpt2"), eos_token=EOT).save_pretrained(path)
    return path


def smoke_config(work: Path, target: Path) -> Path:
    """pile-gpt2.yaml with its three paths that must exist (data.source, mixture.target, mixture.textset) set to
    the smoke run's: the parser checks a path in the config file as it reads it, before a command-line
    override replaces it, so `--mixture.target` alone cannot stand in for a missing /data/targets/gpt2-medium."""
    import yaml

    config = yaml.safe_load(CONFIG.read_text())
    config["data"]["source"] = "demo"
    config["mixture"].update(target=str(target), textset="demo")
    path = work / CONFIG.name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def fit_args(args, work: Path, target: Path, max_steps: int) -> list[str]:
    """`mixalign fit` on pile-gpt2.yaml, with what cannot run on a CPU (and what would take hours) overridden."""
    half = max(1, args.steps // 2)
    overrides = {
        "data.source": "demo", "data.tokenizer": "gpt2", "data.cache_dir": work / "data_cache",
        "data.batch_size": args.batch_size, "data.num_workers": 0, "data.num_proc": 1,
        "data.val_fraction": 0.1, "data.val_windows_per_domain": 4,  # 0.001 of the demo corpus holds no document out
        "trainer.max_steps": max_steps, "trainer.accelerator": "cpu", "trainer.devices": 1,
        "trainer.strategy": "auto", "trainer.precision": "32-true", "trainer.accumulate_grad_batches": 1,
        "trainer.log_every_n_steps": 1, "trainer.limit_val_batches": 2, "trainer.default_root_dir": work / "runs",
        "model.compile": "false", "checkpoint.every_n_train_steps": half,
        "mixture.target": target, "mixture.textset": "demo", "mixture.cache_dir": work / "mixture_cache",
        "mixture.probe_steps": 1, "mixture.candidate_steps": 1, "mixture.n_texts": args.n_texts,
        "kl.n_texts": args.n_texts,
    }
    if args.quick:
        overrides["mixture.selection"] = "solver"  # the domain probes only: no candidate probes
    return ["fit", "--config", str(smoke_config(work, target)), *[part for key, value in overrides.items() for part in (f"--{key}", str(value))]]


def run_fit(cli: list[str], work: Path, log: Path) -> dict:
    """One `python -m mixalign` process, niced as the caller is; its output goes to `log`."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, "-m", "mixalign", *cli], cwd=work, env=env, stdout=out,
                              stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - start
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        sys.stderr.write(text[-6000:])
        raise SystemExit(f"scale_smoke: `mixalign {' '.join(cli[:3])} ...` failed (exit {proc.returncode}); log: {log}")
    summary = re.findall(r"^SUMMARY: .*$", text, flags=re.M)
    return {"wall_seconds": seconds, "summary": summary[-1] if summary else None,
            "peak_rss_children_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}


def step_times(run_dir: Path) -> list[float]:
    """Seconds between consecutive `train/loss` events (logged every step) within each event file: one file a
    process, so the restart of the resume never counts as a step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    intervals = []
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        events = EventAccumulator(str(path))
        events.Reload()
        if "train/loss" in events.Tags()["scalars"]:
            loss = sorted(events.Scalars("train/loss"), key=lambda e: e.step)
            intervals += [b.wall_time - a.wall_time for a, b in zip(loss, loss[1:]) if b.step == a.step + 1]
    return intervals


def last_step(work: Path) -> int | None:
    """global_step of the newest last.ckpt (read memory-mapped)."""
    from mixalign.model.checkpoint import read_checkpoint

    found = sorted((work / "runs").glob("lightning_logs/version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    return int(read_checkpoint(found[-1], mmap=True)["global_step"]) if found else None


def run_both(args, work: Path) -> dict:
    """Target, then fit to N/2 (checkpoint), then resume to N; the measurements of both."""
    target = build_target(work / "target")
    half = max(1, args.steps // 2)
    first = run_fit(fit_args(args, work, target, half), work, Path(args.out) / "scale_smoke_fit.log")
    print(f"fit to step {half}: {first['wall_seconds']:.0f} s wall", flush=True)
    second = run_fit(fit_args(args, work, target, args.steps) + ["--ckpt_path", "last"], work,
                     Path(args.out) / "scale_smoke_resume.log")
    print(f"resume to step {args.steps}: {second['wall_seconds']:.0f} s wall", flush=True)
    logs = sorted((work / "runs" / "lightning_logs").glob("version_*"))
    intervals = step_times(logs[-1]) if logs else []
    reached = last_step(work)
    return {
        "seconds_per_step": {
            "tensorboard": median(intervals) if intervals else None,
            "tensorboard_intervals": intervals,
            "wall_fit": first["wall_seconds"] / half,
            "wall_resume": second["wall_seconds"] / (args.steps - half),
            "note": "tensorboard: median seconds between consecutive train/loss events of one process (None when no "
                    "process took 2 steps); wall_*: a whole process's wall time over its steps, startup, data "
                    "preparation, the mixture's probes and the distance measurements included",
        },
        "peak_rss_children_mib": max(first["peak_rss_children_mib"], second["peak_rss_children_mib"]),
        "resume": {"checkpoint_step": half, "target_step": args.steps, "reached_step": reached,
                   "reached": reached == args.steps},
        "summary_line": second["summary"],
        "summary_line_first_run": first["summary"],
        "wall_seconds": {"fit": first["wall_seconds"], "resume": second["wall_seconds"]},
    }


def cost_of_config() -> dict:
    """The method's cost account for pile-gpt2.yaml as written (its real max_steps, 22 domains, 8 GPUs)."""
    from benchmarks.cost_account import CONFIGS, account

    return account("pile-gpt2.yaml", **CONFIGS["pile-gpt2.yaml"])


def report(result: dict) -> str:
    """The SCALE_SMOKE section's text."""
    s, r, cost = result["seconds_per_step"], result["resume"], result["cost_account"]
    tb = f"{s['tensorboard']:.1f} s a step (TensorBoard event times)" if s["tensorboard"] else "no TensorBoard interval"
    quick = " --quick" if result["settings"]["quick"] else ""
    return (f"`python benchmarks/scale_smoke.py{quick}` ({result['settings']['steps']} steps, batch "
            f"{result['settings']['batch_size']} x 1024 tokens, {result['machine']['nproc']} CPU cores, "
            f"{result['machine']['cpu_model']}): {tb}; {s['wall_resume']:.1f} s a step by the resumed process's "
            f"wall time (startup included); peak RSS {result['peak_rss_children_mib']:,.0f} MiB; the resume from step "
            f"{r['checkpoint_step']} reached step {r['reached_step']} ({'as asked' if r['reached'] else 'NOT as asked'}).\n\n"
            f"```\n{result['summary_line']}\n```\n\npile-gpt2.yaml as written: {cost['line']} "
            f"({cost['share_of_main_run']:.3%}).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="N: train to N/2, checkpoint, resume to N")
    parser.add_argument("--batch-size", type=int, default=1, help="windows of 1024 tokens a step")
    parser.add_argument("--n-texts", type=int, default=8, help="texts of the probes' and the distance monitor's text set")
    parser.add_argument("--quick", action="store_true", help="smoke check: N = 2, the domain probes only (selection: solver)")
    parser.add_argument("--out", default=str(RESULTS), help="results folder (default benchmarks/results)")
    parser.add_argument("--write", action="store_true", help="fill BENCHMARKS.md's SCALE_SMOKE section")
    args = parser.parse_args()
    if args.quick:
        args.steps = 2
    if args.steps < 2:
        parser.error("--steps must be at least 2 (a checkpoint half-way, then a resume)")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="scale-smoke-") as tmp:
        measured = run_both(args, Path(tmp))
    settings = {"config": "configs/pile-gpt2.yaml", "steps": args.steps, "batch_size": args.batch_size,
                "n_texts": args.n_texts, "quick": args.quick, "device": "cpu", "precision": "32-true",
                "config_copy_replaces": ["data.source: demo", "mixture.target: the random target", "mixture.textset: demo"]}
    result = {"settings": settings, **measured, "cost_account": cost_of_config()}
    path = write_result("scale_smoke", result, args.out)
    s = measured["seconds_per_step"]
    print(f"seconds a step: TensorBoard {s['tensorboard']}, wall (resume) {s['wall_resume']:.1f}; peak RSS "
          f"{measured['peak_rss_children_mib']:,.0f} MiB; resume reached step {measured['resume']['reached_step']} "
          f"of {args.steps}\n{measured['summary_line']}\n{result['cost_account']['line']}\nresults: {path}")
    if args.write:
        import json

        replace_section(REPO / "BENCHMARKS.md", "SCALE_SMOKE", report(json.loads(path.read_text())), path)


if __name__ == "__main__":
    main()
