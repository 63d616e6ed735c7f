"""Rebuild the demo checkpoints from their configs (not run by CI; about 35 min on 2 CPU cores).

    python scripts/build_demo_checkpoints.py            # trains base, then target and near; exports each
    python scripts/build_demo_checkpoints.py --skip-training --base RUN.ckpt --target RUN.ckpt --near RUN.ckpt
    python scripts/build_demo_checkpoints.py --only near   # retrain one model (near continues the shipped base)

Writes checkpoints/{base,target,near}.ckpt (slim: weights, hyper-parameters, tokenizer) and
checkpoints/{target,near}.npz (the targets' log-likelihood vectors on the shipped demo text set).
The base is exported before the others train: `near` (configs/near.yaml) continues it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from mixalign.model.checkpoint import export_checkpoint

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "checkpoints"
MODELS = ("base", "target", "near")  # in training order
TARGETS = ("target", "near")


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
    parser.add_argument("--near", help="with --skip-training: the near target run's checkpoint")
    parser.add_argument("--only", choices=MODELS, help="train and export this model only")
    args = parser.parse_args()
    for name in [args.only] if args.only else MODELS:
        run = Path(getattr(args, name)) if args.skip_training else train(name, Path(args.work))
        print(f"{name}: {run} -> {export_checkpoint(run, OUT / f'{name}.ckpt')}")
        if name in TARGETS:
            subprocess.run(
                [sys.executable, "-m", "mixalign", "score", "--model", str(OUT / f"{name}.ckpt"), "--textset", "demo",
                 "--out", str(OUT / f"{name}.npz")],
                check=True,
            )


if __name__ == "__main__":
    main()
