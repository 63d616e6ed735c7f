"""Weights: solver seconds at K = 22 domains, N = 10,000 texts, and seconds per probe at the demo scale.

Solver: synthetic centred-free vectors A (N x K, standard normal columns with a shared component,
so the columns are correlated like real probe moves) and a target t = A w_true + noise with a
sparse non-negative w_true, so the active set has real work to do. Timed: `solve_direction`,
`solve_distance` (step ratio 15) and `diagnose`, median of `--solver-repeats`.

Probe: what `mixalign weights` does per domain (`mixalign.mixture.probes.run_probe` without the
disk cache): copy the base, S steps of `train_steps` on one domain (demo model and data of
configs/pile.yaml: 4 layers, 128 wide, block 128, batch 16; S = mixture.probe_steps = 40), then
`score_gpt` of the probe on the demo text set (all 1000 texts, as mixture.n_texts = null).
A full alignment on the demo data runs 8 domain probes + 1 linearity-check probe + 1 base scoring.

    python benchmarks/bench_weights.py            # solver x5, 2 probes of 40 steps on 1000 texts
    python benchmarks/bench_weights.py --quick    # solver x2, 1 probe of 5 steps on 100 texts
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import (  # noqa: E402
    PILE_MODEL,
    PILE_OPTIM,
    REPO,
    SEED,
    add_run_arguments,
    measured_on,
    median,
    peak_rss_mib,
    prepared_datamodule,
    replace_section,
    set_threads,
    table,
    write_result,
)

from mixalign.llvec.scoring import score_gpt  # noqa: E402
from mixalign.llvec.textset import load_textset, subset_textset  # noqa: E402
from mixalign.mixture.probes import ProbeSettings, train_steps  # noqa: E402
from mixalign.mixture.solvers import diagnose, solve_direction, solve_distance  # noqa: E402
from mixalign.model.nanogpt import GPT, GPTConfig  # noqa: E402


def synthetic(n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(n, 1, generator=g, dtype=torch.float64)
    A = 0.6 * shared + torch.randn(n, k, generator=g, dtype=torch.float64)
    w_true = torch.zeros(k, dtype=torch.float64)
    w_true[torch.randperm(k, generator=g)[: max(1, k // 3)]] = torch.rand(max(1, k // 3), generator=g, dtype=torch.float64)
    t = A @ w_true + 0.5 * torch.randn(n, generator=g, dtype=torch.float64) - 0.3 * A[:, 0]
    return A, t


def bench_solver(n: int, k: int, repeats: int) -> dict:
    A, t = synthetic(n, k)
    timings = {"solve_direction": [], "solve_distance": [], "diagnose": []}
    tracemalloc.start()
    for _ in range(repeats):
        start = time.perf_counter()
        direction = solve_direction(A, t)
        timings["solve_direction"].append(time.perf_counter() - start)
        start = time.perf_counter()
        distance = solve_distance(A, t, step_ratio=15.0)
        timings["solve_distance"].append(time.perf_counter() - start)
        start = time.perf_counter()
        diagnose(A, t, direction.weights, step_ratio=15.0, mean_bytes=830.0)
        timings["diagnose"].append(time.perf_counter() - start)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "N": n, "K": k,
        "median_s": {name: median(ts) for name, ts in timings.items()},
        "all_s": timings,
        "nonzero_weights": {"direction": int((direction.weights > 0).sum()), "distance": int((distance.weights > 0).sum())},
        "python_traced_peak_mib": round(traced_peak / 2**20, 2),
    }


def bench_probes(args) -> dict:
    dm = prepared_datamodule(args.cache_dir)
    textset = load_textset("demo")
    if args.n_texts:
        textset = subset_textset(textset, args.n_texts)
    token_ids = dm.encode(textset.texts)
    torch.manual_seed(SEED)
    base = GPT(GPTConfig(**PILE_MODEL, vocab_size=dm.vocab_size))
    base_state = {k: v.detach().clone() for k, v in base.state_dict().items()}
    settings = ProbeSettings(
        steps=args.probe_steps, learning_rate=PILE_OPTIM["learning_rate"], weight_decay=PILE_OPTIM["weight_decay"],
        betas=PILE_OPTIM["betas"], batch_size=dm.batch_size, block_size=dm.block_size, grad_clip=1.0, seed=SEED,
    )
    start = time.perf_counter()
    score_gpt(base, token_ids)
    base_score_s = time.perf_counter() - start

    probes = []
    for k in range(args.probes):
        onehot = np.eye(len(dm.domains))[k]
        start = time.perf_counter()
        model = GPT(base.config)
        model.load_state_dict(base_state)
        train_steps(model, dm.train_dataset(weights=onehot), settings)
        trained = time.perf_counter()
        score_gpt(model, token_ids)
        end = time.perf_counter()
        probes.append({"domain": dm.domains[k], "train_s": trained - start, "score_s": end - trained, "total_s": end - start})
        print(f"probe {dm.domains[k]:<12} train {trained - start:6.2f} s  score {end - trained:6.2f} s  total {end - start:6.2f} s", flush=True)
    per_probe = median([p["total_s"] for p in probes])
    n_probes = len(dm.domains) + 1  # domain probes + the linearity-check probe
    return {
        "probe_steps": args.probe_steps,
        "n_texts": len(token_ids),
        "probes": probes,
        "median_probe_s": per_probe,
        "median_train_s": median([p["train_s"] for p in probes]),
        "median_score_s": median([p["score_s"] for p in probes]),
        "base_score_s": base_score_s,
        "projected_alignment_s": base_score_s + n_probes * per_probe,
        "projected_alignment_probes": n_probes,
    }


def render(record: dict) -> str:
    """BENCHMARKS.md's tables of the solver's and one probe's time, from its results file."""
    summary, solver, probes = record["summary"], record["solver"], record["probes"]
    met = "met" if summary["solver_target_met"] else "not met"
    domains = ", ".join(p["domain"] for p in probes["probes"])
    return "\n".join([
        f"{measured_on(record)} Solver: N = {solver['N']:,} texts, K = {solver['K']} domains, the median of "
        f"{len(next(iter(solver['all_s'].values())))} runs.", "",
        "| call | median s |", "|---|---|",
        *(f"| `{name}` | {seconds:.4f} |" for name, seconds in solver["median_s"].items()), "",
        f"Target < {summary['solver_target_s']:.0f} s: **{met}**.", "",
        f"Probe: {probes['probe_steps']} `train_steps` then `score_gpt` on {probes['n_texts']:,} texts; the median of "
        f"{len(probes['probes'])} probes ({domains}).", "",
        "| part | seconds |", "|---|---|",
        f"| {probes['probe_steps']} `train_steps` | {summary['probe_train_s']:.1f} |",
        f"| scoring {probes['n_texts']:,} texts | {summary['probe_score_s']:.1f} |",
        f"| **per probe** | **{summary['probe_s']:.1f}** |",
        f"| projected alignment ({probes['projected_alignment_probes']} probes and the base's scoring) | "
        f"{summary['projected_alignment_s']:.0f} |", "",
        f"Peak RSS {summary['peak_rss_mib']['after_solver']:,.0f} MiB after the solver, "
        f"{summary['peak_rss_mib']['after_probes']:,.0f} MiB after the probes.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--N", type=int, default=10_000, help="texts (rows of A)")
    parser.add_argument("--K", type=int, default=22, help="domains (columns of A; the Pile has 22)")
    parser.add_argument("--solver-repeats", type=int, default=5)
    parser.add_argument("--probes", type=int, default=2, help="domain probes to time")
    parser.add_argument("--probe-steps", type=int, default=40, help="S (mixture.probe_steps)")
    parser.add_argument("--n-texts", type=int, default=0, help="text-set subset (0: all 1000 demo texts)")
    add_run_arguments(parser, "smoke run: solver x2, 1 probe of 5 steps on 100 texts")
    args = parser.parse_args()
    if args.quick:
        args.solver_repeats, args.probes, args.probe_steps, args.n_texts = 2, 1, 5, 100
    set_threads(args.threads)

    solver = bench_solver(args.N, args.K, args.solver_repeats)
    solver["peak_rss_mib"] = peak_rss_mib()
    print(table(["solver (N=%d, K=%d)" % (args.N, args.K), "median s"], [[k, v] for k, v in solver["median_s"].items()]))
    print()
    probes = bench_probes(args)
    probes["peak_rss_mib"] = peak_rss_mib()

    solver_s = solver["median_s"]["solve_direction"]
    summary = {
        "solver_direction_s": solver_s,
        "solver_distance_s": solver["median_s"]["solve_distance"],
        "diagnose_s": solver["median_s"]["diagnose"],
        "solver_target_s": 1.0,
        "solver_target_met": bool(max(solver_s, solver["median_s"]["solve_distance"]) < 1.0),
        "probe_s": probes["median_probe_s"],
        "probe_train_s": probes["median_train_s"],
        "probe_score_s": probes["median_score_s"],
        "projected_alignment_s": probes["projected_alignment_s"],
        "peak_rss_mib": {"after_solver": solver["peak_rss_mib"], "after_probes": probes["peak_rss_mib"]},
        "solver_python_traced_peak_mib": solver["python_traced_peak_mib"],
    }
    settings = {"threads": torch.get_num_threads(), "quick": args.quick, "model": PILE_MODEL, "batch_size": 16,
                "probe_learning_rate": PILE_OPTIM["learning_rate"], "grad_clip": 1.0}
    path = write_result("bench_weights_quick" if args.quick else "bench_weights",
                        {"settings": settings, "summary": summary, "solver": solver, "probes": probes})
    if not args.quick:
        replace_section(REPO / "BENCHMARKS.md", "BENCH_WEIGHTS", render(json.loads(path.read_text())), path)
    print()
    print(table(["figure", "seconds"], [
        [f"solve_direction (N={args.N}, K={args.K})", solver_s],
        [f"solve_distance (N={args.N}, K={args.K})", solver["median_s"]["solve_distance"]],
        [f"diagnose (N={args.N}, K={args.K})", solver["median_s"]["diagnose"]],
        [f"probe: {args.probe_steps} train_steps", probes["median_train_s"]],
        [f"probe: score {probes['n_texts']} texts", probes["median_score_s"]],
        ["probe total", probes["median_probe_s"]],
        [f"projected alignment ({probes['projected_alignment_probes']} probes + base scoring)", probes["projected_alignment_s"]],
    ]))
    print(f"\nsolver < 1 s: {'met' if summary['solver_target_met'] else 'NOT met'}; peak RSS {probes['peak_rss_mib']:.0f} MiB")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
