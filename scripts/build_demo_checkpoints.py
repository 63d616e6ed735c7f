"""Rebuild the demo checkpoints from their configs (not run by CI; about 30 min on 2 CPU cores).

    python scripts/build_demo_checkpoints.py            # trains base and target, then exports
    python scripts/build_demo_checkpoints.py --skip-training --base RUN.ckpt --target RUN.ckpt

Writes checkpoints/base.ckpt, checkpoints/target.ckpt (slim: weights, hyper-parameters, tokenizer)
and checkpoints/target.npz (the target's log-likelihood vector on the shipped demo text set).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from mixalign.model.checkpoint import export_checkpoint

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "checkpoints"


def train(name: str, work: Path) -> Path:
    run_dir = work / name
    subprocess.run(
        [sys.executable, "-m", "mixalign", "fit", "--config", str(REPO / "configs" / f"{name}.yaml"),
         "--trainer.default_root_dir", str(run_dir)],
        check=True,
    )
    return sorted(run_dir.glob("lightning_logs/version_*/checkpoints/last.ckpt"))[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="runs/demo-checkpoints", help="where the training runs go")
    parser.add_argument("--skip-training", action="store_true", help="export the given run checkpoints only")
    parser.add_argument("--base", help="with --skip-training: the base run's checkpoint")
    parser.add_argument("--target", help="with --skip-training: the target run's checkpoint")
    args = parser.parse_args()
    if args.skip_training:
        runs = {"base": Path(args.base), "target": Path(args.target)}
    else:
        runs = {name: train(name, Path(args.work)) for name in ("base", "target")}
    for name, run in runs.items():
        print(f"{name}: {run} -> {export_checkpoint(run, OUT / f'{name}.ckpt')}")
    subprocess.run(
        [sys.executable, "-m", "mixalign", "score", "--model", str(OUT / "target.ckpt"), "--textset", "demo",
         "--out", str(OUT / "target.npz")],
        check=True,
    )


if __name__ == "__main__":
    main()
