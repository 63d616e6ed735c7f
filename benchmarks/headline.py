"""The headline experiment: from the demo `base` (or a random model), which mixture brings it closest to a target?

Every method trains for the same steps (equal token budgets) with several seeds (`data.seed`: the
training data order; the probes have their own seed), and is measured against the target by exact
token-level KL in both directions (bits/byte; "below uniform in every seed" is judged on it), a
Monte Carlo KL at the end, the log-likelihood-vector distance (the papers' measure, under its own
name) and the per-domain val-loss distance. Methods:
  uniform, natural, own-mixture (the target's training mixture, known for the demo targets);
  aligned (the product's default: the paper's direction solver, then measured candidates incl. the
    kl-softmin mixtures that aim at exact KL); paper-direction, paper-distance, paper-rounds (the
    paper's solvers, their solution used as solved);
  kd (distillation from the target on uniform data; alpha and T tuned on a grid, best reported);
  random-best (the best of 20 Dirichlet(1) mixtures: the empirical best fixed mixture at this budget).
The grid and the random search are run on a tuning data order (seed 0) that the table does not
report, then the winner is rerun on the table's seeds. Settings: `continued` (configs/pile.yaml,
from the base) and `scratch` (configs/scratch.yaml, from random initialisation). Writes
<out>/headline-<target>[-scratch].{md,json,png} and -map.png, and BENCHMARKS.md's HEADLINE_* section when
<out> is benchmarks/results. Finished runs are kept under <out>/runs and reused by a rerun with the
same arguments.

    python benchmarks/headline.py --target near --downstream     # continued pretraining, 3 seeds
    python benchmarks/headline.py --target far --significance 0   # also aligned with no significance test
    python benchmarks/headline.py --target near --setting scratch     # --no-search: no KD grid, no random
    python benchmarks/headline.py --target far --methods uniform aligned   # only these rows
    python benchmarks/headline.py --quick --out /tmp/headline     # tiny sizes, one seed: the test runs this
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks._common import code_state, logged_scalars, read_config, replace_section  # noqa: E402
from mixalign.callbacks.kl import EXACT as EXACT_KL  # noqa: E402
from mixalign.callbacks.kl import LLVEC, MC, se_tag  # noqa: E402
from mixalign.io import write_bytes_atomic  # noqa: E402

TARGETS = {"near": ("checkpoints/near.ckpt", "configs/near.yaml"),
           "far": ("checkpoints/target.ckpt", "configs/target.yaml")}
SETTINGS = {"continued": ("configs/pile.yaml", 150), "scratch": ("configs/scratch.yaml", 300)}  # config, steps
KD_GRID = ((0.5, 1.0), (0.9, 1.0), (0.5, 2.0), (0.9, 2.0))  # (alpha, T) of the distillation loss
N_RANDOM, DIRICHLET, RANDOM_SEED = 20, 1.0, 2026
TUNING_SEED = 0  # the grid and the random search use this data order; the table reports seeds 1..n
N_TEXTS, MC_SAMPLES = 300, 128
QUICK = ["--mixture.n_texts", "16", "--mixture.probe_steps", "2", "--mixture.candidate_steps", "4", "--model.warmup_steps", "2"]
EXACT, REVERSE = f"{EXACT_KL}/model_to_target", f"{EXACT_KL}/target_to_model"
MC_KL = f"{MC}/model_to_target"
DOWNSTREAM = ("uniform", "natural", "aligned", "paper-direction", "kd", "own-mixture", "random-best")
STUDENT_BLOCK = 128  # the students' window (configs/pile.yaml data.block_size)
TOKENS_PER_STEP = 16 * STUDENT_BLOCK


@dataclass(frozen=True)
class Plan:
    target: str
    setting: str
    steps: int
    seeds: int
    out: Path
    cache_dir: Path
    jobs: int
    quick: bool
    search: bool
    significance: float | None = None  # also an `aligned` row with this mixture.significance
    rows: tuple[str, ...] = ()  # only these methods of the table (all when empty)

    @property
    def name(self) -> str:
        return f"headline-{self.target}" + ("" if self.setting == "continued" else f"-{self.setting}")

    @property
    def checkpoint(self) -> str:
        return str(REPO / TARGETS[self.target][0])

    @property
    def n_texts(self) -> int:
        return 16 if self.quick else N_TEXTS

    @property
    def mc_samples(self) -> int:
        return 4 if self.quick else MC_SAMPLES

    @property
    def tuning_seed(self) -> int:
        """The search's data order: the table's own seed when quick (its winners' reruns are then its runs)."""
        return 1 if self.quick else TUNING_SEED

    def val_interval(self, validations: int) -> int:
        """Steps between validations (quick: at the start and the end only: each costs a second)."""
        return self.steps if self.quick else max(1, self.steps // validations)


def own_mixture(target: str) -> dict[str, float]:
    return read_config(Path(TARGETS[target][1]).name)["data"]["weights"]


def methods(plan: Plan) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(runs on the table's seeds, runs of the search on the tuning seed), as fit arguments."""
    paper = ["--data.weights", "aligned", "--mixture.selection", "solver"]
    kd = {f"kd alpha {a} T {t}": ["--data.weights", "uniform", "--model.teacher", plan.checkpoint,
                                  "--model.distill_alpha", str(a), "--model.distill_temperature", str(t)]
          for a, t in (KD_GRID[:2] if plan.quick else KD_GRID)}
    domains = sorted(own_mixture(plan.target))
    draws = np.random.default_rng(RANDOM_SEED).dirichlet(np.full(len(domains), DIRICHLET), 2 if plan.quick else N_RANDOM)
    random = {f"random {i:02d}": ["--data.weights", json.dumps(dict(zip(domains, w.tolist())))]
              for i, w in enumerate(draws)}
    table = {
        "uniform": ["--data.weights", "uniform"],
        "natural": ["--data.weights", "natural"],
        "own-mixture": ["--data.weights", json.dumps(own_mixture(plan.target))],
        "aligned": ["--data.weights", "aligned"],
        "paper-direction": [*paper, "--mixture.solver", "direction"],
        "paper-distance": [*paper, "--mixture.solver", "distance"],
        "paper-rounds": [*paper, "--mixture.solver", "direction", "--mixture.rounds", "2"],
    }
    if plan.significance is not None:  # what the selection's significance test costs or saves, same probes
        table[f"aligned-significance-{plan.significance:g}"] = ["--data.weights", "aligned", "--mixture.significance",
                                                                str(plan.significance)]
    if not plan.search:
        table["kd"] = next(iter(kd.values()))
    if unknown := sorted(set(plan.rows) - set(table)):
        raise SystemExit(f"--methods: no row {unknown} in this table; its rows: {', '.join(table)}")
    if plan.rows:
        table = {m: a for m, a in table.items() if m in plan.rows or m.startswith("aligned-significance")}
    return table, ({**kd, **random} if plan.search else {})


def fit(plan: Plan, name: str, seed: int, args: list[str], validations: int) -> Path:
    """One training run (reused when a finished one is on disk); returns its version directory."""
    root = plan.out / "runs" / f"{plan.name}-{name.replace(' ', '_')}-seed{seed}"
    # a run is reused only for the very arguments it was trained with, on the same code
    marker = json.dumps({"args": args, "code_hash": code_state()["code_hash"]}).encode()
    if not (root / "finished").exists() or (root / "finished").read_bytes() != marker:
        shutil.rmtree(root, ignore_errors=True)
        config = REPO / SETTINGS[plan.setting][0]
        command = [
            sys.executable, "-m", "mixalign", "fit", "--config", str(config), "--mixture.target", plan.checkpoint,
            "--seed_everything", str(seed), "--data.seed", str(seed), "--data.cache_dir", str(plan.cache_dir),
            "--trainer.max_steps", str(plan.steps), "--trainer.val_check_interval", str(plan.val_interval(validations)),
            "--checkpoint.every_n_train_steps", str(plan.steps), "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(root),
            "--kl.n_texts", str(plan.n_texts), "--kl.mc_samples", str(plan.mc_samples),
            "--mixture.cache_dir", str(plan.out / "mixture_cache"),
            *(QUICK + (["--mixture.warmup_steps", "2"] if plan.setting == "scratch" else []) if plan.quick else []),
            *args,
        ]
        threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // plan.jobs))
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
        if done.returncode:
            raise SystemExit(f"{name} seed {seed} failed ({' '.join(command)}):\n{done.stderr[-4000:]}")
        write_bytes_atomic(root / "finished", marker)
    return sorted(root.glob("lightning_logs/version_*"))[-1]


def given_weights(args: list[str]) -> dict[str, float]:
    """The mixture a run was given on the command line (a JSON `--data.weights`), or {}."""
    given = args[args.index("--data.weights") + 1] if "--data.weights" in args else ""
    return json.loads(given) if given.startswith("{") else {}


def summarize(version: Path, target_losses: dict[str, float], args: list[str]) -> dict:
    """A finished run's figures, read back from its TensorBoard scalars and files."""
    logged = logged_scalars(version)
    computed = {k.split("/")[-1]: v[-1][1] for k, v in logged.items() if k.startswith("mixture/weight/")}
    kl = logged[EXACT]
    losses = {d: logged[f"val/loss/{d}"][-1][1] for d in target_losses}
    mc = logged.get(MC_KL, [(0, float("nan"))])[-1][1]
    return {
        "kl_curve": kl, "start_kl": kl[0][1], "final_kl": kl[-1][1], "final_kl_se": logged[se_tag(EXACT)][-1][1],
        "final_reverse_kl": logged[REVERSE][-1][1], "final_llvec_distance": logged[LLVEC][-1][1],
        "mc_kl": mc, "mc_kl_se": logged.get(se_tag(MC_KL), [(0, float("nan"))])[-1][1],
        "mc_kl_text_level": logged.get(f"{MC_KL}_text_level", [(0, float("nan"))])[-1][1],
        "domain_loss_distance": float(np.mean([abs(losses[d] - target_losses[d]) for d in losses])),
        "weights": computed or given_weights(args),
        "checkpoint": str(next(version.glob("checkpoints/last.ckpt"))),
        "vector": str(sorted(version.glob("llvec/step-*.npz"))[-1]),
        "start_vector": str(sorted(version.glob("llvec/step-*.npz"))[0]),
        # the run's own wall time: from its config (written at setup) to the last file it wrote
        "seconds": max(p.stat().st_mtime for p in version.rglob("*")) - (version / "config.yaml").stat().st_mtime,
    }


def run_chains(plan: Plan, chains: list[list[tuple]], target_losses: dict[str, float]) -> dict:
    """Each chain's runs one after another (runs that share probes go in one chain), chains in parallel."""
    def chain(runs: list[tuple]) -> dict:
        done = {}
        for name, seed, args, validations in runs:
            t0 = time.time()
            done[name, seed] = summary = summarize(fit(plan, name, seed, args, validations), target_losses, args)
            print(f"{plan.name} {name:<18} seed {seed}: exact KL model->target {summary['start_kl']:.4f} -> "
                  f"{summary['final_kl']:.4f} bits/byte ({time.time() - t0:.0f} s)", flush=True)
        return done

    with ThreadPoolExecutor(plan.jobs) as pool:
        return {key: value for part in pool.map(chain, chains) for key, value in part.items()}


def cropped_to_student_block(checkpoint: str, root: Path) -> str:
    """The checkpoint with its position embeddings cut to the students' block (nanoGPT's
    crop_block_size): a causal model gives the same losses on the first positions, so a target
    trained on longer windows (far: 256) is validated on the students' windows (128)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    wpe = state["state_dict"]["model.wpe.weight"]
    if len(wpe) == STUDENT_BLOCK:
        return checkpoint
    state["state_dict"]["model.wpe.weight"] = wpe[:STUDENT_BLOCK].clone()
    state["hyper_parameters"]["block_size"] = STUDENT_BLOCK
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return str(write_bytes_atomic(root / f"target-block{STUDENT_BLOCK}.ckpt", buffer.getvalue()))


def target_domain_losses(plan: Plan) -> dict[str, float]:
    """The target's validation loss per domain on the students' windows (block 128), as logged."""
    root = plan.out / "runs" / f"{plan.target}-validate"
    subprocess.run(
        [sys.executable, "-m", "mixalign", "validate", "--config", str(REPO / TARGETS[plan.target][1]),
         "--data.block_size", str(STUDENT_BLOCK), "--ckpt_path", cropped_to_student_block(plan.checkpoint, root),
         "--data.cache_dir", str(plan.cache_dir),
         "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"],
        cwd=REPO, check=True, capture_output=True, text=True,
    )
    logged = logged_scalars(sorted(root.glob("lightning_logs/version_*"))[-1])
    return {d: logged[f"val/loss/{d}"][-1][1] for d in own_mixture(plan.target)}


def measure(plan: Plan) -> dict:
    """Every run of the plan: the table's methods on seeds 1..n, the search on the tuning seed, and
    the search's winners on seeds 1..n."""
    target_losses = target_domain_losses(plan)
    table, search = methods(plan)
    seeds = range(1, plan.seeds + 1)
    aligned = [m for m in table if m.startswith(("aligned", "paper"))]
    chains = [[(m, s, table[m], 4) for s in seeds for m in aligned]]  # they share the domain probes
    chains += [[(m, s, table[m], 4)] for m in table if m not in aligned for s in seeds]
    chains += [[(m, plan.tuning_seed, args, 1)] for m, args in search.items()]
    done = run_chains(plan, chains, target_losses)
    tuning = {m: done[m, plan.tuning_seed] for m in search}
    winners = {}
    for family, method in (("kd", "kd"), ("random", "random-best")):
        candidates = [m for m in search if m.startswith(family)]
        if candidates:
            winners[method] = min(candidates, key=lambda m: tuning[m]["final_kl"])
    reruns = [[(m, s, search[w], 4)] for m, w in winners.items() for s in seeds if s != plan.tuning_seed]
    done.update(run_chains(plan, reruns, target_losses))
    rerun = {**done, **{(m, plan.tuning_seed): done[w, plan.tuning_seed] for m, w in winners.items()}}
    results = {m: [{"seed": s, **rerun[m, s]} for s in seeds] for m in [*table, *winners]}
    search_table = {m: {"final_kl": r["final_kl"], "weights": r["weights"]} for m, r in tuning.items()}
    return {"results": results, "search": search_table, "winners": winners, "target_domain_losses": target_losses,
            "runs": len(done), "run_seconds": sum(r["seconds"] for r in done.values())}


def downstream(plan: Plan, results: dict) -> dict:
    """`mixalign eval` of the base and each method's final checkpoint, one evaluation per seed: the
    mean gap to the target's task accuracy (demo tasks) and agreement with its choices."""
    def evaluate(seed: int) -> dict:
        where = plan.out / "runs" / f"{plan.name}-downstream-seed{seed}"
        report = where / "eval.json"
        if not report.exists():
            models = where / "models"
            models.mkdir(parents=True, exist_ok=True)
            for method in [m for m in DOWNSTREAM if m in results]:
                link = models / f"{method}.ckpt"
                if not link.exists():
                    os.link(results[method][seed - 1]["checkpoint"], link)
            subprocess.run([sys.executable, "-m", "mixalign", "eval", "--target", plan.checkpoint, "--models",
                            str(REPO / "checkpoints" / "base.ckpt"), *sorted(map(str, models.glob("*.ckpt"))),
                            "--out", str(where), *(["--limit", "8"] if plan.quick else [])],
                           cwd=REPO, check=True, capture_output=True, text=True)
        return json.loads(report.read_text())["models"]

    with ThreadPoolExecutor(plan.jobs) as pool:
        per_seed = list(pool.map(evaluate, range(1, plan.seeds + 1)))
    return {name: {"mean_gap": [s[name]["mean_gap"] for s in per_seed],
                   "mean_agreement": [s[name]["mean_agreement"] for s in per_seed],
                   "task_gaps": [{t: r["gap"] for t, r in s[name]["tasks"].items()} for s in per_seed]}
            for name in per_seed[0]}


def cell(values, spec: str) -> str:
    """'mean ± standard error' over seeds (the mean alone for one seed)."""
    mean, se = mean_se(values)
    return f"{mean:{spec}}" if math.isnan(se) else f"{mean:{spec}} ± {se:{spec}}"


def mean_se(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(se)


def method_table(results: dict) -> list[str]:
    """The main table: one row per method, mean +- standard error over seeds."""
    uniform = {r["seed"]: r["final_kl"] for r in results.get("uniform", [])}
    keys = ("final_kl", "final_reverse_kl", "mc_kl", "final_llvec_distance", "domain_loss_distance")
    formats = (".4f", ".4f", ".4f", ".3f", ".3f")
    lines = ["| method | exact KL model->target | exact KL target->model | Monte Carlo KL model->target | "
             "log-likelihood-vector distance | per-domain val-loss distance | below uniform in every seed |",
             "|---|---|---|---|---|---|---|"]
    for method, runs in results.items():
        cells = [cell([r[k] for r in runs], f) for k, f in zip(keys, formats)]
        below = "-" if method == "uniform" or not uniform else (
            "yes" if all(r["final_kl"] < uniform[r["seed"]] for r in runs) else "no")
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {below} |")
    return lines


def search_lines(measured: dict, plan: Plan) -> list[str]:
    """The tuning seed's search: the KD grid in full, the random mixtures summarised."""
    if not measured["search"]:
        return ["KD: one untuned setting (alpha 0.5, T 1); no random search (`--no-search`)."]
    search, winners = measured["search"], measured["winners"]
    kd = [f"{m.removeprefix('kd ')} {r['final_kl']:.4f}" for m, r in search.items() if m.startswith("kd")]
    random = sorted(r["final_kl"] for m, r in search.items() if m.startswith("random"))
    best = search[winners["random-best"]]["weights"]
    return [
        f"KD was tuned on the tuning seed ({plan.tuning_seed}) over (alpha, T), exact KL model->target after "
        f"{plan.steps} steps: {'; '.join(kd)}; the table's `kd` row is the best, {winners['kd'].removeprefix('kd ')}, "
        "rerun on the table's seeds.",
        f"Random mixtures: {len(random)} drawn from Dirichlet({DIRICHLET:g}) (seed {RANDOM_SEED}), each trained once "
        f"on the tuning seed: exact KL best {random[0]:.4f}, median {np.median(random):.4f}, worst {random[-1]:.4f}. "
        "The `random-best` row reruns the best on the table's seeds (picked on another data order, so no "
        "selection bias on the table's seeds): "
        + ", ".join(f"{d} {w:.2f}" for d, w in sorted(best.items(), key=lambda kv: -kv[1])) + ".",
    ]


def downstream_lines(gaps: dict, target: str) -> list[str]:
    lines = ["| model | mean gap to the target's accuracy (demo tasks) | agreement with the target's choices |",
             "|---|---|---|"]
    for name, g in gaps.items():
        if name != target:
            lines.append(f"| {name} | {cell(g['mean_gap'], '.4f')} | {cell(g['mean_agreement'], '.3f')} |")
    return lines


def report_text(measured: dict, plan: Plan, seconds: float) -> str:
    start = "the base" if plan.setting == "continued" else "a random initialisation"
    results = measured["results"]
    lines = [
        f"From {start} toward `{TARGETS[plan.target][0]}` ({plan.target}), {plan.steps} steps x {TOKENS_PER_STEP} "
        f"tokens per method, {plan.seeds} seeds; exact KL (bits/byte) and the vector distance on {plan.n_texts} texts "
        f"of the demo text set, Monte Carlo KL (text-level, bits/byte) from {plan.mc_samples} samples of the model. Mean ± "
        "standard error over seeds; \"below uniform\" compares exact KL model->target seed by seed.", "",
        *method_table(results), "",
        f"Exact KL model->target at step 0: {np.mean([r['start_kl'] for rs in results.values() for r in rs]):.4f} "
        f"bits/byte. {measured['runs']} training runs, {measured['run_seconds'] / 60:.0f} min of run time in all "
        f"({plan.jobs} at a time on {os.cpu_count()} cores; runs finished by an earlier invocation are reused: this one took "
        f"{seconds / 60:.0f} min).", "",
        *search_lines(measured, plan),
    ]
    if "downstream" in measured:
        lines += ["", "Downstream (`mixalign eval`, the five demo tasks; mean over seeds of each seed's mean gap):", "",
                  *downstream_lines(measured["downstream"], Path(plan.checkpoint).stem)]
    return "\n".join(lines) + "\n"


def draw(measured: dict, plan: Plan) -> None:
    """Exact KL against training tokens per method, and the model map of seed 1's final models."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mixalign.llvec.plots import save_figure, save_model_map
    from mixalign.llvec.vectors import load_vector

    figure, ax = plt.subplots(figsize=(7, 4.5))
    for i, (method, runs) in enumerate(measured["results"].items()):
        steps = [s for s, _ in runs[0]["kl_curve"]]
        curves = np.array([[v for _, v in r["kl_curve"]] for r in runs])
        tokens = np.array([0 if s == 0 else s * TOKENS_PER_STEP for s in steps])
        ax.plot(tokens, curves.mean(0), "-o", ms=3, label=method, color=f"C{i}")
        if len(runs) > 1:
            se = curves.std(0, ddof=1) / math.sqrt(len(runs))
            ax.fill_between(tokens, curves.mean(0) - se, curves.mean(0) + se, color=f"C{i}", alpha=0.15)
    ax.set(xlabel="training tokens", ylabel="exact KL model->target (bits/byte)", yscale="log",
           title=f"{plan.setting} training toward the {plan.target} target")
    ax.legend(fontsize=7)
    save_figure(figure, plan.out / f"{plan.name}.png")
    first = {m: runs[0] for m, runs in measured["results"].items()}
    target = plan.out / "runs" / f"{plan.target}-vector-{plan.n_texts}.npz"
    if not target.exists():
        subprocess.run([sys.executable, "-m", "mixalign", "score", "--model", plan.checkpoint, "--n_texts",
                        str(plan.n_texts), "--out", str(target)], cwd=REPO, check=True, capture_output=True)
    vectors = [load_vector(first["uniform"]["start_vector"]), *(load_vector(r["vector"]) for r in first.values()),
               load_vector(target)]
    save_model_map(vectors, ["start", *first, "target"], plan.out / f"{plan.name}-map.png",
                   title=f"{plan.name}: seed 1's final models", star="target")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=list(TARGETS), default="near")
    parser.add_argument("--setting", choices=list(SETTINGS), default="continued")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="default: 150 continued, 300 from scratch")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (each gets cores/jobs threads)")
    parser.add_argument("--no-search", dest="search", action="store_false", help="no KD grid, no random mixtures")
    parser.add_argument("--downstream", action="store_true", help="also evaluate each method on the demo tasks")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one seed, a few steps: checks the script")
    parser.add_argument("--methods", nargs="+", default=[], metavar="METHOD",
                        help="only these rows of the table (uniform, natural, own-mixture, aligned, paper-direction, "
                             "paper-distance, paper-rounds; kd with --no-search); default: all")
    parser.add_argument("--significance", type=float, default=None,
                        help="add a row: aligned with this mixture.significance instead of the config's")
    parser.add_argument("--cache-dir", default=str(REPO / "data_cache"), help="prepared-data cache")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()
    steps = args.steps or (6 if args.quick else SETTINGS[args.setting][1])
    plan = Plan(args.target, args.setting, steps, 1 if args.quick else args.seeds, Path(args.out).resolve(),
                Path(args.cache_dir).resolve(), args.jobs, args.quick, args.search, args.significance, tuple(args.methods))
    methods(plan)  # an unknown --methods name stops here, before any run
    started = time.time()
    measured = measure(plan)
    if args.downstream:
        measured["downstream"] = downstream(plan, measured["results"])
    report = report_text(measured, plan, time.time() - started)
    print(report)
    plan.out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(plan.out / f"{plan.name}.md", report.encode())
    write_bytes_atomic(plan.out / f"{plan.name}.json", json.dumps(
        {"command": " ".join(["python benchmarks/headline.py", *sys.argv[1:]]), **code_state(), **measured,
         "plan": {k: str(v) for k, v in vars(plan).items()},
         "wall_seconds": time.time() - started},
        indent=1).encode())
    draw(measured, plan)
    if plan.out == REPO / "benchmarks" / "results" and not plan.quick:
        command = " ".join(["python benchmarks/headline.py", *sys.argv[1:]])
        replace_section(REPO / "BENCHMARKS.md", plan.name.upper().replace("-", "_"),
                        f"Produced by `{command}` on 2 CPU cores:\n\n{report}\n"
                        f"![exact KL against training tokens](benchmarks/results/{plan.name}.png) "
                        f"![model map](benchmarks/results/{plan.name}-map.png)", plan.out / f"{plan.name}.json")


if __name__ == "__main__":
    main()
