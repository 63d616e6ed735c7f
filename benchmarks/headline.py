"""The headline experiment: from the demo `base`, which mixture brings it closest to `target`?

Every method trains the base for the same steps (equal token budgets) with several seeds, logging
the KL to the target (bits/byte) at every validation. Methods: uniform, natural, aligned-direction,
aligned-distance, aligned with rounds, knowledge distillation (KD), and the oracle (the target's
own mixture). Writes benchmarks/results/headline.{md,json,png}.

    python benchmarks/headline.py                 # 3 seeds, 150 steps (about 30 min on 2 CPU cores)
    python benchmarks/headline.py --seeds 1 --steps 50 --out /tmp/headline   # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks._common import logged_scalars  # noqa: E402
from mixalign.io import write_bytes_atomic  # noqa: E402

TARGET_MIXTURE = yaml.safe_load((REPO / "configs" / "target.yaml").read_text())["data"]["weights"]
METHODS = {
    "uniform": ["--mixture.target", "null", "--data.weights", "uniform"],
    "natural": ["--mixture.target", "null", "--data.weights", "natural"],
    "aligned-direction": ["--mixture.solver", "direction"],
    "aligned-distance": ["--mixture.solver", "distance"],
    "aligned-rounds": ["--mixture.solver", "direction", "--mixture.rounds", "2"],
    "kd": ["--mixture.target", "null", "--data.weights", "uniform", "--model.teacher", "checkpoints/target.ckpt"],
    "oracle": ["--mixture.target", "null", "--data.weights", json.dumps(TARGET_MIXTURE)],
}


def run(method: str, seed: int, steps: int, out: Path) -> Path:
    root = out / "runs" / f"{method}-seed{seed}"
    args = [
        sys.executable, "-m", "mixalign", "fit", "--config", str(REPO / "configs" / "pile.yaml"),
        "--seed_everything", str(seed), "--data.seed", str(seed),
        "--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(max(1, steps // 4)),
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(root), "--checkpoint.dirpath", str(root / "checkpoints"),
        "--kl.n_texts", "300", "--mixture.cache_dir", str(out / "mixture_cache"),
        *METHODS[method],
    ]
    subprocess.run(args, cwd=REPO, check=True, capture_output=True, text=True)
    return sorted(root.glob("lightning_logs/version_*"))[-1]


def target_domain_losses(out: Path) -> dict[str, float]:
    """The target's validation loss per domain on the students' windows (block 128), as logged."""
    root = out / "runs" / "target-validate"
    subprocess.run(
        [sys.executable, "-m", "mixalign", "validate", "--config", str(REPO / "configs" / "target.yaml"),
         "--data.block_size", "128", "--ckpt_path", str(REPO / "checkpoints" / "target.ckpt"),
         "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"],
        cwd=REPO, check=True, capture_output=True, text=True,
    )
    logged = logged_scalars(sorted(root.glob("lightning_logs/version_*"))[-1])
    domains = yaml.safe_load((REPO / "configs" / "target.yaml").read_text())["data"]["weights"]
    return {d: logged[f"val/loss/{d}"][-1][1] for d in domains}


def mean_se(values: list[float]) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(se)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()
    out = Path(args.out)
    started = time.time()
    target_losses = target_domain_losses(out)
    results: dict[str, list[dict]] = {}
    for method in args.methods:
        for seed in range(1, args.seeds + 1):
            t0 = time.time()
            logged = logged_scalars(run(method, seed, args.steps, out))
            kl = logged["val/llvec_distance"]
            losses = {d: logged[f"val/loss/{d}"][-1][1] for d in target_losses}
            results.setdefault(method, []).append({
                "seed": seed,
                "kl_curve": kl,
                "final_kl": kl[-1][1],
                "start_kl": kl[0][1],
                "ce_gap": logged["val/ce_gap_to_target"][-1][1],
                "domain_loss_distance": float(np.mean([abs(losses[d] - target_losses[d]) for d in losses])),
                "weights": {k.split("/")[-1]: v[-1][1] for k, v in logged.items() if k.startswith("mixture/weight/")},
            })
            print(f"{method:<18} seed {seed}: KL {kl[0][1]:.3f} -> {kl[-1][1]:.3f} bits/byte ({time.time() - t0:.0f} s)",
                  flush=True)
    tokens_per_step = 16 * 128
    write_report(results, target_losses, args, out, tokens_per_step, time.time() - started)


def write_report(results, target_losses, args, out: Path, tokens_per_step: int, seconds: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mixalign.llvec.plots import save_figure

    uniform_final = {r["seed"]: r["final_kl"] for r in results.get("uniform", [])}
    lines = [
        f"From `checkpoints/base.ckpt`, {args.steps} steps x {tokens_per_step} tokens per method, "
        f"{args.seeds} seeds (`data.seed`: the training data order; the probes have their own seed); "
        "KL to `checkpoints/target.ckpt` on 300 texts of the demo text set.",
        "",
        "| method | final KL to target (bits/byte) | CE gap (nats/text) | per-domain val-loss distance | below uniform in every seed |",
        "|---|---|---|---|---|",
    ]
    for method, runs in results.items():
        kl_m, kl_se = mean_se([r["final_kl"] for r in runs])
        gap_m, gap_se = mean_se([r["ce_gap"] for r in runs])
        dist_m, dist_se = mean_se([r["domain_loss_distance"] for r in runs])
        below = "-" if method == "uniform" or not uniform_final else (
            "yes" if all(r["final_kl"] < uniform_final[r["seed"]] for r in runs) else "no")
        lines.append(f"| {method} | {kl_m:.3f} ± {kl_se:.3f} | {gap_m:.1f} ± {gap_se:.1f} | "
                     f"{dist_m:.3f} ± {dist_se:.3f} | {below} |")
    start = [r["start_kl"] for runs in results.values() for r in runs]
    lines += ["", f"KL of the base before training: {np.mean(start):.3f} bits/byte. Wall time {seconds / 60:.0f} min."]
    report = "\n".join(lines) + "\n"
    print(report)
    out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out / "headline.md", report.encode())
    write_bytes_atomic(out / "headline.json", json.dumps(
        {"results": results, "target_domain_losses": target_losses, "steps": args.steps, "seeds": args.seeds,
         "wall_seconds": seconds}, indent=1).encode())

    figure, ax = plt.subplots(figsize=(7, 4.5))
    for i, (method, runs) in enumerate(results.items()):
        steps = [s for s, _ in runs[0]["kl_curve"]]
        curves = np.array([[v for _, v in r["kl_curve"]] for r in runs])
        tokens = np.array([0 if s == 0 else (s + 1) * tokens_per_step for s in steps])
        ax.plot(tokens, curves.mean(0), "-o", ms=3, label=method, color=f"C{i}")
        if len(runs) > 1:
            se = curves.std(0, ddof=1) / math.sqrt(len(runs))
            ax.fill_between(tokens, curves.mean(0) - se, curves.mean(0) + se, color=f"C{i}", alpha=0.15)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("KL to target (bits/byte)")
    ax.set_title("Continued pretraining of base toward target")
    ax.legend(fontsize=8)
    save_figure(figure, out / "headline.png")


if __name__ == "__main__":
    main()
