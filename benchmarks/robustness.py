"""Robustness: is the recommended mixture ever worse than uniform, on targets nobody tuned it for?

Each target is the shipped base continued for `--steps` steps on a mixture drawn from a
Dirichlet(alpha) over the 8 demo domains (alphas cycle through `--alphas`; one seeded draw per
target), so its distance from the base is mostly its training mixture: the case the method is for.
For every target, mixalign's own mixture computation (configs/pile.yaml's `mixture:` section:
domain probes, the direction solver, the tilt probes and the share-response candidate, the
measured selection with its `min_gain`) picks a mixture from the base; then main runs of the same length from the base train on

  - the recommendation,
  - uniform (one run, shared by all targets),
  - the solver's mixture as solved (the paper's method, no selection),
  - the target's own mixture (a different data seed: the floor no mixture can beat).

Each main run's exact token-level KL to its target on the text set (the mean of both directions,
per text, bits/byte) is compared with uniform's, paired over the texts. The gap closed is
(uniform - recommended) / (uniform - own). Writes results/robustness.{json,md} and a figure; with
--write, the ROBUSTNESS section of BENCHMARKS.md.

    python benchmarks/robustness.py --workers 2 --write   # 8 targets x 200 steps, two at a time: about 50 min on 2 cores
    python benchmarks/robustness.py --quick        # 2 targets x 30 steps: a smoke run (minutes)
    python benchmarks/robustness.py --seed 2027 --resume   # an interrupted draw: runs the targets it lacks
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (  # noqa: E402
    RESULTS,
    add_run_arguments,
    machine,
    replace_section,
    set_threads,
    write_result,
)
from mixalign.data.datamodule import PileMixtureDataModule  # noqa: E402
from mixalign.io import atomic_path  # noqa: E402
from mixalign.llvec.compare import exact_kl_between  # noqa: E402
from mixalign.llvec.models import load_model, model_from_gpt  # noqa: E402
from mixalign.llvec.textset import load_textset, resolve_textset, subset_textset  # noqa: E402
from mixalign.mixture.aligned import (  # noqa: E402
    MixtureConfig,
    ProbeContext,
    compute_mixture,
    load_target,
    probe_settings,
    step_ratio,
)
from mixalign.mixture.probes import ProbeSettings, train_steps  # noqa: E402
from mixalign.model.checkpoint import gpt_from_checkpoint  # noqa: E402
from mixalign.model.nanogpt import GPT  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LN2 = math.log(2)
MAIN_SEED = 1  # data order of every main run (targets use 100 + i, probes mixture.seed)
DEFAULT_SEED = 2026  # the published draw; other seeds are held-out checks, saved under their own names


def pile_config() -> dict:
    return yaml.safe_load((REPO / "configs" / "pile.yaml").read_text())


class Bench:
    """The shipped base, the demo data and the main-run recipe of configs/pile.yaml."""

    def __init__(self, cache_dir: str, steps: int, n_texts: int, min_gain: float | None = None):
        self.config = pile_config()
        if min_gain is not None:  # a trial value, recorded in the results' meta
            self.config["mixture"]["min_gain"] = min_gain
        data = {k: v for k, v in self.config["data"].items() if k != "weights"}
        self.dm = PileMixtureDataModule(**{**data, "cache_dir": cache_dir})
        self.dm.prepare_data()
        self.dm.setup("fit")
        self.base, self.checkpoint = gpt_from_checkpoint(REPO / "configs" / self.config["model"]["init_from"])
        self.base_state = {k: v.clone() for k, v in self.base.state_dict().items()}
        model = self.config["model"]
        self.hp = SimpleNamespace(learning_rate=model["learning_rate"], min_lr=model["min_lr"],
                                  warmup_steps=model["warmup_steps"], weight_decay=model["weight_decay"],
                                  betas=(0.9, 0.95), lr_decay_steps=None)
        self.steps = steps
        self.main = ProbeSettings(steps=steps, learning_rate=model["learning_rate"], weight_decay=model["weight_decay"],
                                  betas=(0.9, 0.95), batch_size=self.dm.batch_size, block_size=self.dm.block_size,
                                  grad_clip=self.config["trainer"]["gradient_clip_val"], seed=MAIN_SEED,
                                  decay_to=model["min_lr"], warmup_steps=min(model["warmup_steps"], steps // 4))
        self.textset = subset_textset(load_textset(resolve_textset("demo")), n_texts)

    def train(self, weights: np.ndarray, seed: int) -> GPT:
        model = GPT(self.base.config)
        model.load_state_dict(self.base_state)
        return train_steps(model, self.dm.train_dataset(np.asarray(weights, float), seed=seed), self.main)

    def save(self, model: GPT, path: Path) -> Path:
        """A mixalign checkpoint of `model` (the base's metadata, its weights)."""
        checkpoint = {**self.checkpoint, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                      "global_step": self.steps}
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
        return path

    def exact_terms(self, model: GPT, target) -> np.ndarray:
        """Per-text exact KL, mean of both directions, bits/byte terms (their mean is the distance)."""
        kl = exact_kl_between(model_from_gpt(model, target.tokenizer, "main run"), target, self.textset)
        return (kl.a_to_b + kl.b_to_a) / 2 / (self.textset.mean_bytes * LN2)

    def llvec_terms(self, model: GPT, target) -> np.ndarray:
        """Per-text terms of the log-likelihood-vector distance (their mean is the distance, bits/byte)."""
        values = model_from_gpt(model, target.tokenizer, "main run").score(self.textset).values
        d = values - target.score(self.textset).values
        return (d - d.mean()) ** 2 / 2 / (self.textset.mean_bytes * LN2)

    def recommend(self, target_path: Path, cache: Path):
        mixture = self.config["mixture"]
        config = MixtureConfig(**{**mixture, "target": str(target_path), "n_texts": len(self.textset.texts),
                                  "cache_dir": str(cache)})
        target = load_target(config, self.textset, self.dm.tokenizer_id)
        domain, candidate = probe_settings(config, self.hp, self.dm, self.main.grad_clip, self.steps)
        ctx = ProbeContext(self.base, self.dm, self.textset, target, cache, None)
        return compute_mixture(config, ctx, domain, candidate, step_ratio(self.hp, 0, self.steps, self.steps, domain))


def paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    d = a - b
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))


def run_target(bench: Bench, i: int, alpha: float, own: np.ndarray, work: Path, uniform_model: GPT) -> dict:
    domains = bench.dm.domains
    path = bench.save(bench.train(own, seed=100 + i), work / f"target-{i}.ckpt")
    target = load_model(path)
    result = bench.recommend(path, work / "cache")
    uniform = np.full(len(domains), 1 / len(domains))
    trained = {"uniform": (uniform, uniform_model), "own": (own, bench.train(own, MAIN_SEED))}
    for name, weights in (("recommended", result.weights), ("solver", result.solved)):
        same = next((model for w, model in trained.values() if np.allclose(w, weights, atol=1e-9)), None)
        trained[name] = (weights, same or bench.train(weights, MAIN_SEED))  # one run per distinct mixture
    runs = {name: model for name, (_, model) in trained.items()}
    terms = {name: bench.exact_terms(model, target) for name, model in runs.items()}
    llvec = {name: float(bench.llvec_terms(model, target).mean()) for name, model in runs.items()}
    diff, se = paired(terms["recommended"], terms["uniform"])
    gap, gap_se = paired(terms["uniform"], terms["own"])
    llvec_gap = llvec["uniform"] - llvec["own"]
    return {
        "target": i, "alpha": alpha, "own_mixture": dict(zip(domains, own.round(4).tolist())),
        "chosen": result.chosen, "selection_reason": result.selection.reason if result.selection else None,
        "recommended": dict(zip(domains, np.round(result.weights, 4).tolist())),
        "solved": dict(zip(domains, np.round(result.solved, 4).tolist())),
        "exact_kl": {name: float(t.mean()) for name, t in terms.items()},
        "recommended_minus_uniform": diff, "recommended_minus_uniform_se": se,
        "solver_minus_uniform": paired(terms["solver"], terms["uniform"])[0],
        "gap_uniform_minus_own": gap, "gap_se": gap_se,
        "gap_closed": (-diff / gap) if gap > 0 else None,
        "llvec": llvec,
        "llvec_gap_closed": (llvec["uniform"] - llvec["recommended"]) / llvec_gap if llvec_gap > 0 else None,
        "candidates": [{k: v for k, v in asdict(c).items() if k != "weights"} for c in result.candidates],
    }


def ranks(values) -> np.ndarray:
    """Ranks with ties averaged (zero weights tie)."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="stable")
    r = np.empty(len(values))
    r[order] = np.arange(len(values), dtype=float)
    for v in np.unique(values):
        r[values == v] = r[values == v].mean()
    return r


def spearman(a: dict, b: dict) -> float:
    """Rank correlation of two mixtures over the same domains (nan when one is constant, e.g. uniform)."""
    ra, rb = ranks(list(a.values())), ranks([b[d] for d in a])
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def summarize(rows: list[dict]) -> dict:
    z = [r["recommended_minus_uniform"] / r["recommended_minus_uniform_se"] if r["recommended_minus_uniform_se"] > 0
         else 0.0 for r in rows]
    closed = [r["gap_closed"] for r in rows if r["gap_closed"] is not None]
    measurable = [r["gap_closed"] for r in rows if r["gap_uniform_minus_own"] > 2 * r["gap_se"]]
    llvec_closed = [r["llvec_gap_closed"] for r in rows if r["llvec_gap_closed"] is not None]
    gaps = sum(r["gap_uniform_minus_own"] for r in rows if r["gap_uniform_minus_own"] > 0)
    return {
        "targets": len(rows),
        "worse_than_uniform_beyond_2se": sum(v > 2 for v in z),
        "worst_z_vs_uniform": max(z),
        "mean_gap_closed": float(np.mean(closed)) if closed else None,
        "targets_with_measurable_gap": len(measurable),
        "mean_gap_closed_where_measurable": float(np.mean(measurable)) if measurable else None,
        "mean_llvec_gap_closed": float(np.mean(llvec_closed)) if llvec_closed else None,
        "pooled_gap_closed": (sum(-r["recommended_minus_uniform"] for r in rows if r["gap_uniform_minus_own"] > 0) / gaps
                              if gaps > 0 else None),
        "solver_worse_than_uniform": sum(r["solver_minus_uniform"] > 0 for r in rows),
    }


def rank_cell(value: float) -> str:
    return "- (uniform)" if math.isnan(value) else f"{value:.2f}"


def markdown(rows: list[dict], summary: dict, meta: dict) -> str:
    lines = [
        f"{summary['targets']} targets (Dirichlet mixtures of the 8 demo domains, {meta['steps']} steps from the base), "
        f"main runs of {meta['steps']} steps, exact KL on {meta['n_texts']} texts (mean of both directions, bits/byte). "
        f"`python benchmarks/robustness.py --write`, {meta['minutes']:.0f} min on {meta['machine']['nproc']} cores "
        "(other jobs may have shared them).",
        "",
        "| target | alpha | chosen | uniform | recommended | solver as solved | own mixture | rec. - uniform (SE) "
        "| gap uniform - own (SE) | gap closed | gap closed, vector distance | Spearman(recommended, own) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    percent = lambda v: "-" if v is None else f"{v + 0.0:.0%}"  # noqa: E731  (+ 0.0: no "-0%")
    for r in rows:
        e = r["exact_kl"]
        lines.append(f"| {r['target']} | {r['alpha']:g} | {r['chosen']} | {e['uniform']:.4f} | {e['recommended']:.4f} | "
                     f"{e['solver']:.4f} | {e['own']:.4f} | {r['recommended_minus_uniform']:+.4f} "
                     f"({r['recommended_minus_uniform_se']:.4f}) | {r['gap_uniform_minus_own']:.4f} ({r['gap_se']:.4f}) | "
                     f"{percent(r['gap_closed'])} | {percent(r['llvec_gap_closed'])} | "
                     f"{rank_cell(spearman(r['recommended'], r['own_mixture']))} |")
    lines += ["", f"Recommended worse than uniform by more than 2 paired SEs: {summary['worse_than_uniform_beyond_2se']} "
              f"of {summary['targets']} (worst z {summary['worst_z_vs_uniform']:+.1f}). Gap to the own mixture closed, "
              f"exact KL: mean {percent(summary['mean_gap_closed'])} over all targets, "
              f"{percent(summary['mean_gap_closed_where_measurable'])} over the "
              f"{summary['targets_with_measurable_gap']} whose gap exceeds 2 paired SEs, pooled "
              f"{percent(summary['pooled_gap_closed'])}; vector distance: mean {percent(summary['mean_llvec_gap_closed'])}. "
              f"The solver's mixture as solved (no selection) was worse than uniform on "
              f"{summary['solver_worse_than_uniform']} of {summary['targets']}."]
    return "\n".join(lines)


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = np.arange(len(rows))
    for k, (name, style) in enumerate({"uniform": "s", "recommended": "o", "solver": "x", "own": "^"}.items()):
        ax.scatter(x + (k - 1.5) * 0.1, [r["exact_kl"][name] for r in rows], marker=style, label=name)
    ax.set_xticks(x, [f"{r['target']} (a={r['alpha']:g})" for r in rows], fontsize=7)
    ax.set_ylabel("exact KL to target (bits/byte)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, "2 targets x 30 steps on 64 texts: a smoke run")
    parser.add_argument("--targets", type=int, default=8)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--n-texts", type=int, default=128)
    parser.add_argument("--alphas", default="0.3,1,3,10")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="draws the target mixtures")
    parser.add_argument("--min-gain", type=float, default=None,
                        help="try another mixture.min_gain than configs/pile.yaml's (results saved apart)")
    parser.add_argument("--workers", type=int, default=1,
                        help="targets run in this many processes at once (each with --threads threads)")
    parser.add_argument("--write", action="store_true", help="fill BENCHMARKS.md's ROBUSTNESS section")
    parser.add_argument("--resume", action="store_true",
                        help="keep the targets already in this draw's saved results and run the rest")
    parser.add_argument("--render", action="store_true",
                        help="no runs: fill BENCHMARKS.md's section from the saved results/robustness.json")
    args = parser.parse_args()
    if args.render:
        return publish(json.loads((RESULTS / "robustness.json").read_text()))
    set_threads(args.threads)
    if args.quick:
        args.targets, args.steps, args.n_texts = 2, 30, 64
    start = time.time()
    bench = Bench(args.cache_dir, args.steps, args.n_texts, args.min_gain)
    alphas = [float(a) for a in args.alphas.split(",")]
    rng = np.random.default_rng(args.seed)
    name = result_name(args)
    draw = {"steps": args.steps, "n_texts": args.n_texts, "alphas": alphas, "seed": args.seed,
            "min_gain": bench.config["mixture"]["min_gain"], "response": bench.config["mixture"].get("response", True),
            "quick": args.quick}
    rows, minutes_before = saved_rows(name, draw) if args.resume else ([], 0.0)
    meta = {**draw, "minutes": minutes_before, "machine": machine(), "complete": len(rows) >= args.targets}
    owns = [rng.dirichlet(np.full(len(bench.dm.domains), alphas[i % len(alphas)])) for i in range(args.targets)]
    for row, own in zip(rows, owns):  # kept from the saved run: each must be this seed's draw
        check_draw(row, own)
    jobs = [(i, alphas[i % len(alphas)], owns[i]) for i in range(len(rows), args.targets)]
    with tempfile.TemporaryDirectory(prefix="mixalign-robustness-") as work:
        setup = (args.cache_dir, args.steps, args.n_texts, args.min_gain, args.threads, work)
        with _targets_runner(args.workers, setup) as run:
            for row in run(jobs):  # in target order, whichever worker finishes first
                rows.append(row)
                print(f"target {row['target']}: {row['chosen']} {row['exact_kl']}", flush=True)
                meta = {**draw, "minutes": minutes_before + (time.time() - start) / 60, "machine": machine(),
                        "complete": len(rows) == args.targets}
                write_result(name, {"meta": meta, "summary": summarize(rows), "targets": rows})  # after every target
    summary = summarize(rows)
    text = markdown(rows, summary, meta)
    with atomic_path(RESULTS / f"{name}.md") as tmp:
        tmp.write_text(text + "\n")
    figure(rows, RESULTS / f"{name}.png")
    print(text)
    if args.write and name == "robustness":
        publish({"meta": meta, "summary": summary, "targets": rows})


_WORKER: dict = {}


def _start_worker(cache_dir: str, steps: int, n_texts: int, min_gain: float | None, threads: int, work: str) -> None:
    """A process's own bench and uniform main run (the same in every process: same seed, one thread)."""
    set_threads(threads)
    bench = Bench(cache_dir, steps, n_texts, min_gain)
    uniform = bench.train(np.full(len(bench.dm.domains), 1 / len(bench.dm.domains)), MAIN_SEED)
    _WORKER.update(bench=bench, work=Path(work), uniform=uniform)


def _run_job(job: tuple) -> dict:
    i, alpha, own = job
    return run_target(_WORKER["bench"], i, alpha, own, _WORKER["work"], _WORKER["uniform"])


@contextlib.contextmanager
def _targets_runner(workers: int, setup: tuple):
    """Yields run(jobs) -> rows in target order: here, or spread over `workers` spawned processes."""
    if workers <= 1:
        _start_worker(*setup)
        yield lambda jobs: map(_run_job, jobs)
        return
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_start_worker, initargs=setup) as pool:
        yield lambda jobs: pool.imap(_run_job, jobs)


def saved_rows(name: str, draw: dict) -> tuple[list[dict], float]:
    """The targets of an interrupted run of the same draw, and the minutes it took."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return [], 0.0
    saved = json.loads(path.read_text())
    differs = {k: (saved["meta"].get(k), v) for k, v in draw.items() if saved["meta"].get(k) != v}
    if differs:
        sys.exit(f"--resume: {path} is another draw (saved, asked): {differs}")
    return saved["targets"], saved["meta"]["minutes"]


def check_draw(row: dict, own: np.ndarray) -> None:
    """A kept target's mixture must be the one this seed draws, or the resumed rows would mix draws."""
    if not np.allclose(list(row["own_mixture"].values()), own.round(4), atol=1e-4):
        raise RuntimeError(f"target {row['target']}: saved mixture {row['own_mixture']} is not this seed's draw")


def result_name(args) -> str:
    """robustness for the published draw; a held-out seed or a trial min_gain is saved under its own name."""
    name = "robustness-quick" if args.quick else "robustness"
    if args.seed != DEFAULT_SEED:
        name += f"-seed{args.seed}"
    if args.min_gain is not None:
        name += f"-min_gain{args.min_gain:g}"
    return name


def publish(result: dict) -> None:
    """BENCHMARKS.md's ROBUSTNESS section (and results/robustness.md): the table and the figure of a full run."""
    text = markdown(result["targets"], result["summary"], result["meta"])
    with atomic_path(RESULTS / "robustness.md") as tmp:
        tmp.write_text(text + "\n")
    replace_section(REPO / "BENCHMARKS.md", "ROBUSTNESS", text + "\n\n![robustness](benchmarks/results/robustness.png)",
                    RESULTS / "robustness.json")


if __name__ == "__main__":
    main()
