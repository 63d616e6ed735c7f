"""Robustness: does the recommended mixture hold on targets nobody tuned it for, in three families?

Every target is trained here on a mixture drawn from a Dirichlet(alpha) over the 8 demo domains (the
alphas cycle through `--alphas`, one seeded draw per target), so the target's own mixture is known:

  - continued:   the shipped base continued `--steps` steps on the mixture (configs/pile.yaml's recipe);
  - other-model: a model of another shape (SHAPES), trained from random weights for `--target-steps`
                 steps on the mixture (configs/scratch.yaml's recipe); main runs continue the base;
  - scratch:     the other-model targets again, now with main runs from random weights (the base's
                 shape, `--scratch-steps` steps, the first `mixture.warmup_steps` on uniform, as
                 configs/scratch.yaml does); every main run of a setting shares its initial weights
                 and data order, so seed noise cancels in the paired comparison.

For every setting, mixalign's own computation (the `mixture:` section of configs/pile.yaml) picks a
mixture; then main runs of equal length train on uniform, the recommendation, the paper's solver
as solved, and the target's own mixture (the reference). Each is measured by exact token-level KL
to the target on the text set (mean of both directions, per text, bits/byte), paired with uniform
over the texts. Gap closed = (uniform - recommended) / (uniform - own); z = (recommended - uniform)
/ its paired SE (> 2: worse than uniform).

Two draws: `--draw tuning` (seed 2026), on which every threshold and rule is chosen, with
`--explore` also main-running every candidate (so rules can be compared on it); and `--draw
held-out` (seed 2027), run once per method change on the final code and never used to choose.

    python benchmarks/robustness.py --draw tuning --explore --workers 2     # about an hour on 2 cores
    python benchmarks/robustness.py --draw held-out --workers 2 --write     # results/robustness-heldout.json
    python benchmarks/robustness.py --quick                                  # 1 setting per family, tiny: a smoke run
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (  # noqa: E402
    RESULTS,
    add_run_arguments,
    code_state,
    machine,
    read_config,
    replace_section,
    set_threads,
    write_result,
)
from mixalign.data.datamodule import PileMixtureDataModule  # noqa: E402
from mixalign.io import atomic_path  # noqa: E402
from mixalign.llvec.models import exact_kl_between, load_model, model_from_gpt  # noqa: E402
from mixalign.llvec.textset import load_textset, resolve_textset, subset_textset  # noqa: E402
from mixalign.mixture.candidates import (  # noqa: E402
    EXPLORED_CLOSING_TEMPERATURES,
    EXPLORED_LAG_TEMPERATURES,
    EXPLORED_SOFTMIN_SCALES,
)
from mixalign.mixture.config import MixtureConfig  # noqa: E402
from mixalign.mixture.measure import ProbeContext  # noqa: E402
from mixalign.mixture.method import (  # noqa: E402
    compute_mixture,
    load_target,
    probe_settings,
    step_ratio,
)
from mixalign.mixture.probes import ProbeSettings, train_steps  # noqa: E402
from mixalign.model.checkpoint import gpt_from_checkpoint  # noqa: E402
from mixalign.model.nanogpt import GPT, GPTConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LN2 = math.log(2)
MAIN_SEED = 1  # data order (and, from scratch, initial weights) of every main run
DRAWS = {"tuning": 2026, "held-out": 2027}
FAMILIES = ("continued", "other-model", "scratch")
SHAPES = (dict(n_layer=2, n_head=4, n_embd=192), dict(n_layer=6, n_head=4, n_embd=96))  # other-model targets


def recipe(config: dict) -> SimpleNamespace:
    model = config["model"]
    return SimpleNamespace(learning_rate=model["learning_rate"], min_lr=model["min_lr"],
                           warmup_steps=model["warmup_steps"], weight_decay=model["weight_decay"],
                           betas=(0.9, 0.95), lr_decay_steps=None)


class Bench:
    """The shipped base, the demo data, and the two recipes: continued (pile.yaml), from scratch (scratch.yaml)."""

    def __init__(self, cache_dir: str, sizes: dict):
        self.pile = read_config("pile.yaml")
        self.scratch = read_config("scratch.yaml")
        data = {k: v for k, v in self.pile["data"].items() if k != "weights"}
        self.dm = PileMixtureDataModule(**{**data, "cache_dir": cache_dir})
        self.dm.prepare_data()
        self.dm.setup("fit")
        self.base, self.checkpoint = gpt_from_checkpoint(REPO / "configs" / self.pile["model"]["init_from"])
        self.base_state = {k: v.clone() for k, v in self.base.state_dict().items()}
        self.sizes = sizes
        self.textset = subset_textset(load_textset(resolve_textset("demo")), sizes["n_texts"])
        self.clip = self.pile["trainer"]["gradient_clip_val"]

    def settings(self, config: dict, steps: int, seed: int) -> ProbeSettings:
        hp = recipe(config)
        return ProbeSettings(steps=steps, learning_rate=hp.learning_rate, weight_decay=hp.weight_decay, betas=hp.betas,
                             batch_size=self.dm.batch_size, block_size=self.dm.block_size, grad_clip=self.clip,
                             seed=seed, decay_to=hp.min_lr, warmup_steps=min(hp.warmup_steps, steps // 4))

    def fresh(self, shape: dict | None, seed: int) -> GPT:
        """Random weights of `shape` (default: the base's), seeded."""
        torch.manual_seed(seed)
        return GPT(GPTConfig(**{**asdict(self.base.config), **(shape or {})}))

    def train(self, model: GPT, weights, settings: ProbeSettings, first_step: int = 0, last_step: int | None = None):
        batches = self.dm.train_dataset(np.asarray(weights, float), seed=settings.seed)
        return train_steps(model, batches, settings, first_step=first_step, last_step=last_step)

    def continued(self, weights, steps: int, seed: int) -> GPT:
        model = GPT(self.base.config)
        model.load_state_dict(self.base_state)
        return self.train(model, weights, self.settings(self.pile, steps, seed))

    def save(self, model: GPT, path: Path) -> Path:
        """A mixalign checkpoint of `model` (the base's metadata, the model's shape and weights)."""
        hparams = {**self.checkpoint["hyper_parameters"], **asdict(model.config)}
        checkpoint = {**self.checkpoint, "hyper_parameters": hparams,
                      "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
        return path

    def exact_terms(self, model: GPT, target) -> np.ndarray:
        """Per-text exact KL, mean of both directions, bits/byte terms (their mean is the distance)."""
        kl = exact_kl_between(model_from_gpt(model, target.tokenizer, "main run"), target, self.textset)
        return (kl.a_to_b + kl.b_to_a) / 2 / (self.textset.mean_bytes * LN2)

    def recommend(self, config: dict, model: GPT, target_path: Path, cache: Path, begin: int, steps: int,
                  explore: bool):
        """mixalign's mixture for a run of `steps` steps whose round starts at `begin` from `model`."""
        mixture = {**config["mixture"], "target": str(target_path), "n_texts": len(self.textset.texts),
                   "cache_dir": str(cache)}
        if explore:  # every generator, so that rules can be compared on the tuning draw's main runs
            mixture.update(candidates=["solution", "kl-softmin", "lag", "closing"],
                           softmin_scales=list(EXPLORED_SOFTMIN_SCALES), lag_temperatures=list(EXPLORED_LAG_TEMPERATURES),
                           closing_temperatures=list(EXPLORED_CLOSING_TEMPERATURES))
        mixture.pop("warmup_steps", None)
        if "probe_steps" in self.sizes:  # --quick: probes as short as the runs
            mixture.update(probe_steps=self.sizes["probe_steps"], candidate_steps=self.sizes["probe_steps"])
        mc = MixtureConfig(**mixture)
        target = load_target(mc, self.textset, self.dm.tokenizer_id)
        hp = recipe(config)
        domain, candidate = probe_settings(mc, hp, self.dm, self.clip, steps)
        ctx = ProbeContext(model, self.dm, self.textset, target, cache, None)
        return compute_mixture(mc, ctx, domain, candidate, step_ratio(hp, begin, steps, steps, domain),
                               (steps - begin) * self.dm.batch_size * self.dm.block_size)


def paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    d = a - b
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))


def plan(seed: int, per_family: int, alphas: list[float], k: int) -> list[dict]:
    """The draw: each setting's family, target index and own mixture (scratch reuses the other-model targets)."""
    rng = np.random.default_rng(seed)
    continued = [rng.dirichlet(np.full(k, alphas[i % len(alphas)])) for i in range(per_family)]
    other = [rng.dirichlet(np.full(k, alphas[(i + 1) % len(alphas)])) for i in range(per_family)]
    settings = [dict(family="continued", index=i, alpha=alphas[i % len(alphas)], own=w) for i, w in enumerate(continued)]
    settings += [dict(family=f, index=i, alpha=alphas[(i + 1) % len(alphas)], own=w)
                 for f in ("other-model", "scratch") for i, w in enumerate(other)]
    return settings


def target_model(bench: Bench, setting: dict, seed: int, work: Path) -> Path:
    """The setting's target checkpoint (trained once; scratch shares the other-model target of its index)."""
    i, own = setting["index"], setting["own"]
    if setting["family"] == "continued":
        path = work / f"continued-{seed}-{i}.ckpt"
        if not path.exists():
            bench.save(bench.continued(own, bench.sizes["steps"], seed * 10 + i), path)
        return path
    path = work / f"other-{seed}-{i}.ckpt"
    if not path.exists():
        model = bench.fresh(SHAPES[i % len(SHAPES)], seed * 10 + i)
        bench.save(bench.train(model, own, bench.settings(bench.scratch, bench.sizes["target_steps"], seed * 10 + i)),
                   path)
    return path


def main_runs(bench: Bench, setting: dict, mixtures: dict[str, np.ndarray], target_path: Path, work: Path):
    """(recommendation result, {name: trained model}) for one setting: the method, then a main run per mixture."""
    k = len(bench.dm.domains)
    uniform = np.full(k, 1.0 / k)
    if setting["family"] != "scratch":
        steps = bench.sizes["steps"]
        result = bench.recommend(bench.pile, bench.base, target_path, work / "cache", 0, steps, setting["explore"])
        run = lambda w: bench.continued(w, steps, MAIN_SEED)  # noqa: E731
    else:
        steps, warm = bench.sizes["scratch_steps"], bench.sizes["scratch_warmup"]
        settings = bench.settings(bench.scratch, steps, MAIN_SEED)
        warmed = bench.train(bench.fresh(None, MAIN_SEED), uniform, settings, last_step=warm)
        state = {k_: v.clone() for k_, v in warmed.state_dict().items()}
        result = bench.recommend(bench.scratch, warmed, target_path, work / "cache", warm, steps, setting["explore"])

        def run(w):
            model = GPT(warmed.config)
            model.load_state_dict(state)
            return bench.train(model, w, settings, first_step=warm)
    wanted = {"uniform": uniform, "own": setting["own"], "recommended": result.weights, "solver": result.solved,
              **mixtures(result)}
    trained: list[tuple[np.ndarray, GPT]] = []
    models = {}
    for name, w in wanted.items():  # one run per distinct mixture
        same = next((m for v, m in trained if np.allclose(v, w, atol=1e-9)), None)
        models[name] = same or run(w)
        if same is None:
            trained.append((w, models[name]))
    return result, models


def run_setting(bench: Bench, setting: dict, seed: int, work: Path) -> dict:
    domains = bench.dm.domains
    target_path = target_model(bench, setting, seed, work)
    target = load_model(target_path)
    explore = setting["explore"]
    mixtures = (lambda r: {f"candidate {c.name}": c.weights for c in r.candidates  # noqa: E731
                           if c.name.split()[0] in ("solution", "kl-softmin", "lag", "closing")}) if explore else (lambda r: {})
    result, models = main_runs(bench, setting, mixtures, target_path, work / f"{setting['family']}-{setting['index']}")
    terms = {name: bench.exact_terms(model, target) for name, model in models.items()}
    diff, se = paired(terms["recommended"], terms["uniform"])
    gap, gap_se = paired(terms["uniform"], terms["own"])
    explored = {}
    for c in result.candidates:
        key = f"candidate {c.name}"
        if key in terms:
            d, s = paired(terms[key], terms["uniform"])
            explored[c.name] = {"main_minus_uniform": d, "main_minus_uniform_se": s}
    return {
        "family": setting["family"], "target": setting["index"], "alpha": setting["alpha"],
        "own_mixture": dict(zip(domains, np.round(setting["own"], 4).tolist())),
        "chosen": result.chosen, "selection_reason": result.selection.reason if result.selection else None,
        "recommended": dict(zip(domains, np.round(result.weights, 4).tolist())),
        "solved": dict(zip(domains, np.round(result.solved, 4).tolist())),
        "exact_kl": {name: float(terms[name].mean()) for name in ("uniform", "own", "recommended", "solver")},
        "recommended_minus_uniform": diff, "recommended_minus_uniform_se": se,
        "z_vs_uniform": diff / se if se > 0 else 0.0,
        "solver_minus_uniform": paired(terms["solver"], terms["uniform"])[0],
        "gap_uniform_minus_own": gap, "gap_se": gap_se,
        "gap_closed": (-diff / gap) if gap > 0 else None,
        "probes_trained": result.probes_trained,
        "candidates": [{**{k: v for k, v in asdict(c).items() if k != "weights"},
                        "weights": dict(zip(domains, np.round(c.weights, 4).tolist())),
                        **explored.get(c.name, {})} for c in result.candidates],
    }


def summarize(rows: list[dict]) -> dict:
    def block(subset: list[dict]) -> dict:
        closed = [r["gap_closed"] for r in subset if r["gap_closed"] is not None]
        return {"settings": len(subset), "worse_than_uniform_beyond_2se": sum(r["z_vs_uniform"] > 2 for r in subset),
                "worst_z_vs_uniform": max((r["z_vs_uniform"] for r in subset), default=None),
                "mean_gap_closed": float(np.mean(closed)) if closed else None,
                "solver_worse_than_uniform": sum(r["solver_minus_uniform"] > 0 for r in subset)}

    return {"all": block(rows), **{f: block([r for r in rows if r["family"] == f]) for f in FAMILIES}}


def percent(value) -> str:
    return "-" if value is None else f"{value + 0.0:.0%}"  # + 0.0: no "-0%"


def markdown(rows: list[dict], summary: dict, meta: dict) -> str:
    lines = [
        f"Draw `{meta['draw']}` (seed {meta['seed']}), code {meta['code_hash']} (commit {meta['commit']}): "
        f"{meta['sizes']['steps']}-step continued runs, {meta['sizes']['scratch_steps']}-step runs from scratch, "
        f"other-model targets of {meta['sizes']['target_steps']} steps; exact KL on {meta['sizes']['n_texts']} texts "
        f"(mean of both directions, bits/byte). {meta['minutes']:.0f} min on {meta['machine']['nproc']} cores.",
        "",
        "| family | target | alpha | chosen | uniform | recommended | solver as solved | own mixture "
        "| rec. - uniform (z) | gap closed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e = r["exact_kl"]
        lines.append(f"| {r['family']} | {r['target']} | {r['alpha']:g} | {r['chosen']} | {e['uniform']:.4f} | "
                     f"{e['recommended']:.4f} | {e['solver']:.4f} | {e['own']:.4f} | "
                     f"{r['recommended_minus_uniform']:+.4f} ({r['z_vs_uniform']:+.1f}) | {percent(r['gap_closed'])} |")
    lines.append("")
    for name, s in summary.items():
        lines.append(f"- {name}: {s['settings']} settings; worse than uniform beyond 2 paired SE: "
                     f"{s['worse_than_uniform_beyond_2se']} (worst z {s['worst_z_vs_uniform'] or 0:+.1f}); mean gap "
                     f"closed {percent(s['mean_gap_closed'])}; the paper's solver as solved worse than uniform on "
                     f"{s['solver_worse_than_uniform']}")
    return "\n".join(lines)


def figure(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    x = np.arange(len(rows))
    for k, (name, style) in enumerate({"uniform": "s", "recommended": "o", "solver": "x", "own": "^"}.items()):
        ax.scatter(x + (k - 1.5) * 0.1, [r["exact_kl"][name] for r in rows], marker=style, label=name)
    ax.set_xticks(x, [f"{r['family']} {r['target']}" for r in rows], fontsize=7, rotation=20)
    ax.set_xlabel("setting (family, target)")
    ax.set_ylabel("exact KL to target (bits/byte)")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


_WORKER: dict = {}


def _start_worker(cache_dir: str, sizes: dict, threads: int, work: str) -> None:
    set_threads(threads)
    _WORKER.update(bench=Bench(cache_dir, sizes), work=Path(work))


def _run_job(job: tuple) -> dict:
    setting, seed = job
    return run_setting(_WORKER["bench"], setting, seed, _WORKER["work"])


@contextlib.contextmanager
def _runner(workers: int, setup: tuple):
    """Yields run(jobs) -> rows in job order: here, or spread over `workers` spawned processes."""
    if workers <= 1:
        _start_worker(*setup)
        yield lambda jobs: map(_run_job, jobs)
        return
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_start_worker, initargs=setup) as pool:
        yield lambda jobs: pool.imap(_run_job, jobs)


def result_name(draw: str, quick: bool, families: tuple[str, ...] = FAMILIES) -> str:
    """results/<name>.json: one per draw; a run of some families only gets its own file, named after them."""
    if quick:
        return "robustness-quick"
    name = f"robustness-{draw.replace('-', '')}"
    return name if set(families) == set(FAMILIES) else "-".join((name, *families))


def resumable(name: str, meta: dict) -> tuple[list[dict], float]:
    """The rows of results/<name>.json to keep: all of them, when the file was measured on this code with
    these sizes (a run cut off, or whose scratch rows were lost), and the minutes they took; an error naming
    the mismatch otherwise."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return [], 0.0
    saved = json.loads(path.read_text())
    for key in ("code_hash", "sizes", "explore", "seed"):
        if saved["meta"].get(key) != meta[key]:
            sys.exit(f"--resume: {path} has {key} {saved['meta'].get(key)!r}, this run {meta[key]!r}; "
                     "run without --resume to measure it again")
    return saved["targets"], saved["meta"].get("minutes", 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, "1 setting per family, a few steps, 32 texts: a smoke run")
    parser.add_argument("--draw", choices=tuple(DRAWS), default="tuning")
    parser.add_argument("--per-family", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200, help="continued targets and main runs")
    parser.add_argument("--target-steps", type=int, default=400, help="other-model targets, from scratch")
    parser.add_argument("--scratch-steps", type=int, default=300, help="main runs from scratch")
    parser.add_argument("--n-texts", type=int, default=128)
    parser.add_argument("--alphas", default="0.3,1,3")
    parser.add_argument("--explore", action="store_true", help="also main-run every candidate (the tuning draw)")
    parser.add_argument("--workers", type=int, default=1, help="settings run in this many processes at once")
    parser.add_argument("--families", default=",".join(FAMILIES), help="run only these families (own results file)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the settings already in this draw's results file (same code and sizes)")
    parser.add_argument("--write", action="store_true", help="fill BENCHMARKS.md's section of this draw")
    parser.add_argument("--render", action="store_true",
                        help="no runs: the table, figure and (with --write) section from this draw's saved results")
    args = parser.parse_args()
    families = tuple(args.families.split(","))
    if not set(families) <= set(FAMILIES):
        parser.error(f"--families: expected some of {','.join(FAMILIES)}, got {args.families}")
    if args.render:
        return publish(result_name(args.draw, args.quick, families), args.draw, args.write)
    if args.explore and args.draw == "held-out":
        parser.error("--explore is for the tuning draw: the held-out draw chooses nothing")
    set_threads(args.threads)
    sizes = dict(steps=args.steps, target_steps=args.target_steps, scratch_steps=args.scratch_steps,
                 n_texts=args.n_texts, scratch_warmup=0)
    if args.quick:
        args.per_family, sizes = 1, dict(steps=12, target_steps=12, scratch_steps=12, n_texts=32, probe_steps=3)
    scratch = read_config("scratch.yaml")
    warm_share = scratch["mixture"]["warmup_steps"] / scratch["trainer"]["max_steps"]
    sizes["scratch_warmup"] = max(1, round(sizes["scratch_steps"] * warm_share))
    seed = DRAWS[args.draw]
    start = time.time()
    name = result_name(args.draw, args.quick, families)
    alphas = [float(a) for a in args.alphas.split(",")]
    settings = [s for s in plan(seed, args.per_family, alphas, 8) if s["family"] in families]
    meta = {"draw": args.draw, "seed": seed, "sizes": sizes, "alphas": alphas, "explore": args.explore,
            **code_state(), "config": read_config("pile.yaml")["mixture"]}
    kept, minutes_before = resumable(name, meta) if args.resume else ([], 0.0)
    done = {(row["family"], row["target"]) for row in kept}
    jobs = [({**s, "explore": args.explore}, seed) for s in settings if (s["family"], s["index"]) not in done]
    rows = list(kept)
    with tempfile.TemporaryDirectory(prefix="mixalign-robustness-") as work:
        with _runner(args.workers, (args.cache_dir, sizes, args.threads, work)) as run:
            for row in run(jobs):
                rows.append(row)
                print(f"{row['family']} {row['target']}: {row['chosen']} {row['exact_kl']}", flush=True)
                meta.update(minutes=minutes_before + (time.time() - start) / 60, machine=machine(), complete=len(rows) == len(settings))
                write_result(name, {"meta": meta, "summary": summarize(rows), "targets": rows})
    publish(name, args.draw, args.write and not args.quick)


def publish(name: str, draw: str, write: bool) -> None:
    """results/<name>.md and .png from results/<name>.json; with `write`, BENCHMARKS.md's section of the draw."""
    saved = json.loads((RESULTS / f"{name}.json").read_text())
    rows, meta = saved["targets"], saved["meta"]
    text = markdown(rows, summarize(rows), meta)
    if not meta.get("complete", True):
        text += (f"\n\nIncomplete: {len(rows)} of the draw's settings ran (stopped for time); the missing ones are "
                 "the last in the plan's order.")
    with atomic_path(RESULTS / f"{name}.md") as tmp:
        tmp.write_text(text + "\n")
    figure(rows, RESULTS / f"{name}.png", f"robustness, {draw} draw")
    print(text)
    if write:
        section = name.upper().replace("-", "_")
        replace_section(REPO / "BENCHMARKS.md", section, text + f"\n\n![{name}](benchmarks/results/{name}.png)",
                        RESULTS / f"{name}.json")
    if write and name == result_name("held-out", False):  # the README quotes the whole held-out draw, and only it
        summary = text[text.index("\n- all: "):].strip()
        replace_section(REPO / "README.md", "HELDOUT", f"Held-out draw, code {meta['code_hash']} (commit "
                        f"{meta['commit']}), `python benchmarks/robustness.py --draw held-out --workers 2 --write`:\n\n"
                        f"{summary}", RESULTS / f"{name}.json")


if __name__ == "__main__":
    main()
