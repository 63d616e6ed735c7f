"""`mixalign eval`: downstream task accuracy through lm-eval (an optional extra, which mixalign.downstream imports when run)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from mixalign.cli.parsing import _parser, default_device, output_path
from mixalign.downstream import compare_to_target, evaluate_model, format_report, save_report, task_specs
from mixalign.errors import MixalignError


def eval_main(args: list[str]) -> None:
    """Downstream task accuracy of the target and other models (mixalign checkpoints or Hugging Face
    directories) through lm-eval, offline: per task accuracy +- standard error, the gap to the target's
    accuracy +- paired standard error, and agreement with the target's choices; written as eval.json
    and eval.png. Needs the eval extra (pip install -e '.[eval]' in the mixalign checkout)."""
    parser = _parser("eval", eval_main)
    parser.add_argument("--target", required=True, help="the target model (.ckpt or Hugging Face directory)")
    parser.add_argument("--models", nargs="+", required=True, help="models to compare with it (base, trained runs)")
    parser.add_argument("--tasks", nargs="+", default=["demo"],
                        help="'demo' (all shipped demo tasks), demo_<domain>, task YAML files, or lm-eval task names")
    parser.add_argument("--include_path", nargs="*", default=None, help="directories of your own lm-eval task YAMLs")
    parser.add_argument("--limit", type=Optional[int], default=None, help="first N items of each task (a quick look)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--device", default=default_device())
    parser.add_argument("--out", default="eval", help="directory for eval.json and eval.png")
    cfg = parser.parse_args(args)
    output_path(cfg.out, directory=True)
    specs = {Path(m).stem if Path(m).suffix == ".ckpt" else Path(m).name: m for m in [cfg.target, *cfg.models]}
    if len(specs) != 1 + len(cfg.models):
        raise MixalignError("--target and --models: two models have the same name; give them distinct file names")
    tasks = task_specs(cfg.tasks)
    results = {name: evaluate_model(spec, tasks, cfg.device, cfg.batch_size, cfg.limit, cfg.include_path)
               for name, spec in specs.items()}
    report = compare_to_target(results, next(iter(specs)))
    print(format_report(report))
    json_path, png = save_report(report, Path(cfg.out))
    print(f"written: {json_path}, {png}")
