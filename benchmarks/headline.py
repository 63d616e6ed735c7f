"""The headline experiment: from the demo `base`, which mixture brings it closest to a target?

Every method trains the base for the same steps (equal token budgets) with several seeds, logging
the exact token-level KL to the target in both directions (bits/byte) and the log-likelihood-vector
distance (the papers' measure, under its own name) at every validation. Methods: uniform, natural,
aligned-direction, aligned-distance, aligned with rounds, knowledge distillation (KD, one untuned
setting: alpha 0.5, T 1), and own-mixture (the target's training mixture). Targets: `near` (the
base continued on a skewed mixture, configs/near.yaml) or `far` (another model, configs/target.yaml).
"Below uniform in every seed" is judged on exact KL model->target. Writes
<out>/headline-<target>.{md,json,png} and, into benchmarks/results, README's HEADLINE_<TARGET>
section.

    python benchmarks/headline.py --target near    # 3 seeds, 150 steps
    python benchmarks/headline.py --target far --seeds 1 --steps 50 --out /tmp/headline   # a quick look
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
from benchmarks._common import logged_scalars, replace_section  # noqa: E402
from mixalign.io import write_bytes_atomic  # noqa: E402

TARGETS = {"near": ("checkpoints/near.ckpt", "configs/near.yaml"), "far": ("checkpoints/target.ckpt", "configs/target.yaml")}
EXACT = "val/exact_kl/model_to_target"
REVERSE = "val/exact_kl/target_to_model"
LLVEC = "val/llvec_distance"


def methods(target: str) -> dict[str, list[str]]:
    checkpoint, config = TARGETS[target]
    own = yaml.safe_load((REPO / config).read_text())["data"]["weights"]
    plain = ["--mixture.target", checkpoint]  # fixed data.weights: the target only for the distances
    return {
        "uniform": [*plain, "--data.weights", "uniform"],
        "natural": [*plain, "--data.weights", "natural"],
        "aligned-direction": [*plain, "--data.weights", "aligned", "--mixture.solver", "direction"],
        "aligned-distance": [*plain, "--data.weights", "aligned", "--mixture.solver", "distance"],
        "aligned-rounds": [*plain, "--data.weights", "aligned", "--mixture.solver", "direction", "--mixture.rounds", "2"],
        "kd": [*plain, "--data.weights", "uniform", "--model.teacher", checkpoint],
        "own-mixture": [*plain, "--data.weights", json.dumps(own)],
    }


def run(args: list[str], name: str, seed: int, steps: int, out: Path) -> Path:
    root = out / "runs" / f"{name}-seed{seed}"
    args = [
        sys.executable, "-m", "mixalign", "fit", "--config", str(REPO / "configs" / "pile.yaml"),
        "--seed_everything", str(seed), "--data.seed", str(seed),
        "--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(max(1, steps // 4)),
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(root), "--checkpoint.dirpath", str(root / "checkpoints"),
        "--kl.n_texts", "300", "--mixture.cache_dir", str(out / "mixture_cache"),
        *args,
    ]
    subprocess.run(args, cwd=REPO, check=True, capture_output=True, text=True)
    return sorted(root.glob("lightning_logs/version_*"))[-1]


def target_domain_losses(target: str, out: Path) -> dict[str, float]:
    """The target's validation loss per domain on the students' windows (block 128), as logged."""
    checkpoint, config = TARGETS[target]
    root = out / "runs" / f"{target}-validate"
    subprocess.run(
        [sys.executable, "-m", "mixalign", "validate", "--config", str(REPO / config),
         "--data.block_size", "128", "--ckpt_path", str(REPO / checkpoint),
         "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"],
        cwd=REPO, check=True, capture_output=True, text=True,
    )
    logged = logged_scalars(sorted(root.glob("lightning_logs/version_*"))[-1])
    domains = yaml.safe_load((REPO / config).read_text())["data"]["weights"]
    return {d: logged[f"val/loss/{d}"][-1][1] for d in domains}


def mean_se(values: list[float]) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(se)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--target", choices=list(TARGETS), default="near")
    parser.add_argument("--methods", nargs="*", default=list(methods("near")))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()
    out = Path(args.out)
    started = time.time()
    target_losses = target_domain_losses(args.target, out)
    recipes = methods(args.target)
    results: dict[str, list[dict]] = {}
    for method in args.methods:
        for seed in range(1, args.seeds + 1):
            t0 = time.time()
            logged = logged_scalars(run(recipes[method], f"{args.target}-{method}", seed, args.steps, out))
            kl = logged[EXACT]
            losses = {d: logged[f"val/loss/{d}"][-1][1] for d in target_losses}
            results.setdefault(method, []).append({
                "seed": seed,
                "kl_curve": kl,
                "final_kl": kl[-1][1],
                "start_kl": kl[0][1],
                "final_kl_se": logged[f"{EXACT}_se"][-1][1],
                "final_reverse_kl": logged[REVERSE][-1][1],
                "final_llvec_distance": logged[LLVEC][-1][1],
                "ce_gap": logged["val/ce_gap_to_target"][-1][1],
                "domain_loss_distance": float(np.mean([abs(losses[d] - target_losses[d]) for d in losses])),
                "weights": {k.split("/")[-1]: v[-1][1] for k, v in logged.items() if k.startswith("mixture/weight/")},
            })
            print(f"{method:<18} seed {seed}: exact KL model->target {kl[0][1]:.4f} -> {kl[-1][1]:.4f} bits/byte "
                  f"({time.time() - t0:.0f} s)",
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
        f"From `checkpoints/base.ckpt` toward `{TARGETS[args.target][0]}` ({args.target}), {args.steps} steps x "
        f"{tokens_per_step} tokens per method, {args.seeds} seeds (`data.seed`: the training data order; the probes "
        "have their own seed); distances on 300 texts of the demo text set. Mean ± standard error over seeds.",
        "",
        "| method | exact KL model->target (bits/byte) | exact KL target->model (bits/byte) | "
        "log-likelihood-vector distance | CE gap (nats/text) | per-domain val-loss distance | "
        "below uniform in every seed (exact KL) |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, runs in results.items():
        cells = [mean_se([r[key] for r in runs]) for key in
                 ("final_kl", "final_reverse_kl", "final_llvec_distance", "ce_gap", "domain_loss_distance")]
        below = "-" if method == "uniform" or not uniform_final else (
            "yes" if all(r["final_kl"] < uniform_final[r["seed"]] for r in runs) else "no")
        formats = (".4f", ".4f", ".3f", ".1f", ".3f")
        lines.append(f"| {method} | " + " | ".join(f"{m:{f}} ± {se:{f}}" for (m, se), f in zip(cells, formats))
                     + f" | {below} |")
    start = [r["start_kl"] for runs in results.values() for r in runs]
    lines += ["", f"Exact KL model->target of the base before training: {np.mean(start):.4f} bits/byte. "
              f"Wall time {seconds / 60:.0f} min."]
    report = "\n".join(lines) + "\n"
    print(report)
    out.mkdir(parents=True, exist_ok=True)
    name = f"headline-{args.target}"
    write_bytes_atomic(out / f"{name}.md", report.encode())
    write_bytes_atomic(out / f"{name}.json", json.dumps(
        {"target": args.target, "results": results, "target_domain_losses": target_losses, "steps": args.steps,
         "seeds": args.seeds, "wall_seconds": seconds}, indent=1).encode())

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
    ax.set_ylabel("exact KL model->target (bits/byte)")
    ax.set_title(f"Continued pretraining of base toward the {args.target} target")
    ax.legend(fontsize=8)
    save_figure(figure, out / f"{name}.png")
    if out == REPO / "benchmarks" / "results":
        figure_link = f"![exact KL against training tokens](benchmarks/results/{name}.png)"
        replace_section(REPO / "README.md", f"HEADLINE_{args.target.upper()}",
                        f"Produced by `python benchmarks/headline.py --target {args.target} --seeds {args.seeds} "
                        f"--steps {args.steps} --methods {' '.join(results)}` on 2 CPU cores:\n\n{report}\n{figure_link}")


if __name__ == "__main__":
    main()
