"""Downstream tasks: does training move a model's task scores toward the target's? (the paper's second claim)

Models are evaluated by EleutherAI's lm-evaluation-harness (the `eval` extra, lm-eval 0.4) on
multiple-choice tasks: lm-eval task names, local task YAML files, or the shipped demo tasks
(`demo` for all, `demo_<domain>` for one; see mixalign/assets/tasks/README.md). A mixalign
checkpoint is exported to a temporary Hugging Face directory first (`save_hf_gpt2`), so every model
goes through lm-eval's own `HFLM`. Per task and model: accuracy with its standard error, the gap
|accuracy - target's| with the paired standard error of the difference, and agreement (the share of
items on which the model chooses what the target chooses). Nothing is fetched: tasks must be on disk.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mixalign.assets import asset_path
from mixalign.data.tokenizer import EOT
from mixalign.errors import MixalignError
from mixalign.io import atomic_path, write_bytes_atomic
from mixalign.model.checkpoint import load_gpt
from mixalign.model.hf_gpt2 import save_hf_gpt2

EVAL_EXTRA_HINT = "pip install -e '.[eval]' in the mixalign checkout"
DEMO = "demo"


def demo_task_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(asset_path("tasks").glob("demo_*.yaml"))}


def yaml_task(path: Path) -> str | dict:
    """A task YAML as lm-eval takes it. A plain YAML (no tags, no include) goes as a config whose
    relative local data_files resolve from the YAML's directory; any other goes as its path."""
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return str(path)  # `!function` tags: lm-eval's own loader reads it
    if not isinstance(config, dict) or "include" in config:
        return str(path)
    files = (config.get("dataset_kwargs") or {}).get("data_files")
    if isinstance(files, dict):
        config["dataset_kwargs"]["data_files"] = {
            split: str(path.parent / f) if isinstance(f, str) and "://" not in f and not os.path.isabs(f) else f
            for split, f in files.items()
        }
    return config


def task_specs(tasks: list[str]) -> list[str | dict]:
    """`demo`, `demo_<domain>`, YAML paths and lm-eval task names, as lm-eval's task list."""
    demo = demo_task_files()
    specs: list[str | dict] = []
    for task in tasks:
        if task == DEMO:
            specs += [yaml_task(p) for p in demo.values()]
        elif task in demo:
            specs.append(yaml_task(demo[task]))
        elif task.endswith((".yaml", ".yml")):
            if not Path(task).is_file():
                raise MixalignError(f"task file {task!r} does not exist")
            specs.append(yaml_task(Path(task)))
        else:
            specs.append(task)  # an lm-eval task name (its data must be on disk: nothing is fetched)
    return specs


def _hf_directory(spec: str, workdir: Path) -> Path:
    """A model spec as a Hugging Face directory: HF directories as they are, checkpoints exported."""
    path = Path(spec)
    if path.is_dir():
        return path
    if not path.is_file():
        raise MixalignError(f"model {spec!r} does not exist (a mixalign .ckpt or a Hugging Face directory)")
    model, tokenizer_json = load_gpt(path)
    if tokenizer_json is None:
        raise MixalignError(f"{spec}: no tokenizer is stored with this checkpoint, so lm-eval cannot read its texts")
    return save_hf_gpt2(model, tokenizer_json, EOT, workdir / path.stem)


def _chosen(samples: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(chosen choice, gold choice) per item from lm-eval's logged samples: acc's argmax of log p."""
    samples = sorted(samples, key=lambda s: s["doc_id"])
    chosen = np.array([int(np.argmax([resp[0] for resp in s["filtered_resps"]])) for s in samples])
    return chosen, np.array([int(s["target"]) for s in samples])


@functools.lru_cache(maxsize=4)
def _task_manager(include_path: tuple[str, ...] | None):
    """One lm-eval TaskManager per include path and process: indexing lm-eval's task tree takes
    tens of seconds, and a DownstreamEval callback evaluates at every validation."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(include_path) if include_path else None, verbosity="WARNING")


def evaluate_directory(hf_dir: Path, tasks: list[str | dict], device: str, batch_size: int, limit: int | None,
                       include_path: list[str] | None = None) -> dict[str, dict]:
    """Per task: the chosen and the gold choice of every item (lm-eval's acc is their agreement)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local tasks only: never reach a hub
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise MixalignError(f"downstream evaluation needs lm-eval ({EVAL_EXTRA_HINT})") from None
    lm = HFLM(pretrained=str(hf_dir), device=device, batch_size=batch_size, dtype="float32")
    out = lm_eval.simple_evaluate(model=lm, tasks=tasks, limit=limit, log_samples=True, verbosity="WARNING",
                                  task_manager=_task_manager(tuple(include_path) if include_path else None),
                                  bootstrap_iters=0)
    results = {}
    for task, samples in out["samples"].items():
        if "acc,none" not in out["results"][task]:
            raise MixalignError(f"task {task!r} reports no accuracy: downstream evaluation takes multiple-choice tasks")
        chosen, gold = _chosen(samples)
        # The report's accuracies are computed from these choices: they must be lm-eval's own.
        assert np.isclose((chosen == gold).mean(), out["results"][task]["acc,none"]), task
        results[task] = {"chosen": chosen.tolist(), "gold": gold.tolist()}
    return results


def evaluate_model(spec: str, tasks: list[str | dict], device: str, batch_size: int, limit: int | None,
                   include_path: list[str] | None = None) -> dict[str, dict]:
    """`evaluate_directory` for a mixalign checkpoint (exported first) or a Hugging Face directory."""
    with tempfile.TemporaryDirectory(prefix="mixalign-eval-") as work:
        return evaluate_directory(_hf_directory(spec, Path(work)), tasks, device, batch_size, limit, include_path)


def evaluate_gpt(model, tokenizer_json: str, tasks: list[str | dict], device: str, batch_size: int,
                 limit: int | None, include_path: list[str] | None = None) -> dict[str, dict]:
    """`evaluate_directory` for a model in memory (a run's current weights)."""
    with tempfile.TemporaryDirectory(prefix="mixalign-eval-") as work:
        hf_dir = save_hf_gpt2(model, tokenizer_json, EOT, Path(work) / "model")
        return evaluate_directory(hf_dir, tasks, device, batch_size, limit, include_path)


def compare_to_target(results: dict[str, dict[str, dict]], target: str) -> dict[str, Any]:
    """Per model and task: accuracy +- standard error, gap to the target +- the paired standard
    error of the accuracy difference, agreement with the target's choices; and the mean gap."""
    report: dict[str, Any] = {"target": target, "models": {}}
    for name, tasks in results.items():
        rows = {}
        for task, r in tasks.items():
            t = results[target][task]
            if r["gold"] != t["gold"]:
                raise MixalignError(f"task {task!r}: the models were evaluated on different items (check --limit)")
            right = np.array(r["chosen"]) == np.array(r["gold"])
            right_t = np.array(t["chosen"]) == np.array(t["gold"])
            diff = right.astype(float) - right_t
            n = len(diff)
            rows[task] = {"n": n, "acc": float(right.mean()), "acc_stderr": float(right.std(ddof=1) / np.sqrt(n)),
                          "gap": float(abs(diff.mean())), "gap_stderr": float(diff.std(ddof=1) / np.sqrt(n)),
                          "agreement": float((np.array(r["chosen"]) == np.array(t["chosen"])).mean())}
        report["models"][name] = {"tasks": rows, "mean_gap": float(np.mean([row["gap"] for row in rows.values()])),
                                  "mean_agreement": float(np.mean([row["agreement"] for row in rows.values()]))}
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{'model':<16} {'task':<18} {'n':>5} {'accuracy':>15} {'gap to target':>15} {'agree':>6}"]
    for name, model in report["models"].items():
        for task, r in model["tasks"].items():
            gap = "(target)" if name == report["target"] else f"{r['gap']:.3f} +- {r['gap_stderr']:.3f}"
            lines.append(f"{name:<16} {task:<18} {r['n']:>5} {r['acc']:>7.3f} +- {r['acc_stderr']:.3f} {gap:>15} "
                         f"{r['agreement']:>6.3f}")
        lines.append(f"{name:<16} {'mean':<18} {'':>5} {'':>15} {model['mean_gap']:>15.3f} {model['mean_agreement']:>6.3f}")
    return "\n".join(lines)


def save_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """eval.json and eval.png (accuracy per task and model, standard errors as bars) in `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    json_path = write_bytes_atomic(out / "eval.json", (json.dumps(report, indent=2) + "\n").encode())
    names = list(report["models"])
    tasks = list(report["models"][names[0]]["tasks"])
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(tasks) * max(1, len(names)) / 2), 3.5))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        rows = [report["models"][name]["tasks"][t] for t in tasks]
        ax.bar(np.arange(len(tasks)) + (k - (len(names) - 1) / 2) * width, [r["acc"] for r in rows], width,
               yerr=[r["acc_stderr"] for r in rows], label=name + (" (target)" if name == report["target"] else ""))
    ax.set_xticks(np.arange(len(tasks)), tasks, fontsize=7, rotation=20)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out / "eval.png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return json_path, out / "eval.png"
