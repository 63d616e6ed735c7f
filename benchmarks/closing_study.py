"""The study behind the `closing` candidate, on tuning-draw targets only: from scratch, does the share of
the model's lag on a domain's own texts that the domain's own probe closes follow the target's mixture,
and does a mixture built on it beat uniform after the main run?

For each other-model target of the tuning seeds (robustness.py's `plan`, the scratch family: a model
of another shape trained from random weights on a Dirichlet mixture), the base's shape is trained
from random weights on uniform for the warm-up (robustness.py's scratch sizes), then:
  - the per-domain lag (exact KL per byte, mean of both directions) of the model, and of each domain's
    20-step probe on that domain's own texts: closing share c_d = (lag_d - lag_d after d's probe) / lag_d;
  - Spearman's rho between c and the target's own mixture (domains with texts in the text set);
  - `domain_softmax(c, T)` for the temperatures, each trained as a 40-step candidate probe (the
    method's measure of it) and, for `--main-temperatures`, as a main run, paired with uniform's.
The held-out seed (2027) is refused: nothing is chosen on it.

    python benchmarks/closing_study.py --workers 2 --write      # about 25 min a target per core
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import robustness as bench_lib  # noqa: E402
from benchmarks._common import (  # noqa: E402
    REPO,
    RESULTS,
    add_run_arguments,
    code_state,
    machine,
    replace_section,
    set_threads,
    write_result,
)
from mixalign.llvec.models import load_model  # noqa: E402
from mixalign.mixture.candidates import EXPLORED_CLOSING_TEMPERATURES, domain_softmax  # noqa: E402
from mixalign.mixture.probes import ProbeSettings  # noqa: E402

SIZES = dict(steps=200, target_steps=400, scratch_steps=300, n_texts=128, scratch_warmup=50)  # robustness.py's
NAME = "closing-study"


def per_domain(bench, terms: np.ndarray) -> np.ndarray:
    """Per-text exact-KL terms (bits/byte of the mean text) -> per domain, per byte of its texts (NaN: no text)."""
    ts = bench.textset
    domains, n_bytes = np.asarray(ts.domains), np.asarray(ts.n_bytes, dtype=float)
    return np.array([(terms[domains == d] * ts.mean_bytes).sum() / n_bytes[domains == d].sum()
                     if (domains == d).any() else np.nan for d in bench.dm.domains])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation (no ties in continuous measurements)."""
    return float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1])


def paired(a: np.ndarray, b: np.ndarray) -> dict:
    d = a - b
    return {"minus_uniform": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(len(d)))}


def probe_settings(bench, steps: int, schedule: bool) -> ProbeSettings:
    """The method's probes from scratch: domain probes at a constant rate, candidates the main run in miniature."""
    hp = bench_lib.recipe(bench.scratch)
    shaped = dict(decay_to=hp.min_lr, warmup_steps=max(1, round(steps * hp.warmup_steps / SIZES["scratch_steps"])))
    return ProbeSettings(steps=steps, learning_rate=hp.learning_rate, weight_decay=hp.weight_decay, betas=hp.betas,
                         batch_size=bench.dm.batch_size, block_size=bench.dm.block_size, grad_clip=bench.clip,
                         seed=1337, **(shaped if schedule else {}))


def study(job: tuple) -> dict:
    """One target: the closing shares, their candidates' probes and main runs against uniform and own."""
    seed, setting, work, cache, main_temperatures = job
    set_threads(1)
    bench = bench_lib.Bench(cache, SIZES)
    started, k = time.time(), len(bench.dm.domains)
    target = load_model(bench_lib.target_model(bench, setting, seed, Path(work)))
    uniform = np.full(k, 1 / k)
    main = bench.settings(bench.scratch, SIZES["scratch_steps"], bench_lib.MAIN_SEED)
    warmed = bench.train(bench.fresh(None, bench_lib.MAIN_SEED), uniform, main, last_step=SIZES["scratch_warmup"])
    state = {name: v.clone() for name, v in warmed.state_dict().items()}

    def from_warm(weights, settings, first_step=0):
        model = bench_lib.GPT(warmed.config)
        model.load_state_dict(state)
        return bench.exact_terms(bench.train(model, weights, settings, first_step=first_step), target)

    lag = per_domain(bench, bench.exact_terms(warmed, target))
    domain = probe_settings(bench, 20, schedule=False)
    after = np.array([per_domain(bench, from_warm(np.eye(k)[d], domain))[d] for d in range(k)])
    closing = (lag - after) / lag
    mixtures = {"uniform": uniform, **{f"closing {t:.2f}": domain_softmax(closing, t) for t in
                                       EXPLORED_CLOSING_TEMPERATURES}, "own": np.asarray(setting["own"])}
    candidate = probe_settings(bench, 40, schedule=True)
    probes = {name: from_warm(w, candidate) for name, w in mixtures.items()}
    runs = {name: from_warm(mixtures[name], main, SIZES["scratch_warmup"])
            for name in ("uniform", "own", *(f"closing {t:.2f}" for t in main_temperatures))}
    ok = np.isfinite(closing)
    return {"seed": seed, "target": setting["index"], "alpha": setting["alpha"], "domains": list(bench.dm.domains),
            "own": np.round(setting["own"], 4).tolist(), "lag": lag.tolist(), "closing": closing.tolist(),
            "rho_with_own": spearman(closing[ok], np.asarray(setting["own"])[ok]),
            "weights": {name: np.round(w, 4).tolist() for name, w in mixtures.items()},
            "probe": {name: paired(terms, probes["uniform"]) for name, terms in probes.items()},
            "main": {name: {"exact_kl": float(terms.mean()), **paired(terms, runs["uniform"])}
                     for name, terms in runs.items()},
            "minutes": (time.time() - started) / 60}


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"Tuning seeds {', '.join(map(str, meta['seeds']))}, the scratch family's targets; code "
             f"{meta['code_hash']} (commit {meta['commit']}). Main runs from scratch ({SIZES['scratch_steps']} steps, "
             f"the first {SIZES['scratch_warmup']} on uniform); exact KL to the target, mean of both directions, "
             "bits/byte; `probe`: the 40-step candidate probe's margin over uniform's (z); `main`: the main run's.",
             "", "| seed | target | alpha | rho(closing, own) | uniform | own | candidate | probe (z) | main (z) "
             "| gap closed |", "|---|---|---|---|---|---|---|---|---|---|"]
    z = lambda x: f"{x['minus_uniform']:+.4f} ({x['minus_uniform'] / x['se']:+.1f})"  # noqa: E731
    for r in rows:
        u, own = r["main"]["uniform"]["exact_kl"], r["main"]["own"]["exact_kl"]
        head = f"| {r['seed']} | {r['target']} | {r['alpha']:g} | {r['rho_with_own']:+.2f} | {u:.4f} | {own:.4f} |"
        measured = [name for name in r.get("probe", {}) if name.startswith("closing")]
        for name in measured:
            m = r["main"].get(name)
            closed = f"{-m['minus_uniform'] / (u - own):.0%}" if m and u > own else "-"
            lines.append(f"{head} {name} | {z(r['probe'][name])} | {z(m) if m else '-'} | {closed} |")
        if not measured:
            lines.append(f"{head} (not measured) | - | - | - |")
    if any(r.get("note") for r in rows):
        lines += ["", *sorted({f"- {r['note']}" for r in rows if r.get("note")})]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, "not available: the study has one size")
    parser.add_argument("--seeds", default="2026,2028", help="tuning seeds (robustness.py's plan); never 2027")
    parser.add_argument("--main-temperatures", default="1,2", help="closing temperatures also main-run")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="fill BENCHMARKS.md's CLOSING_STUDY section")
    parser.add_argument("--render", action="store_true", help="no runs: the table from the saved results")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if bench_lib.DRAWS["held-out"] in seeds:
        parser.error("--seeds: the held-out draw's seed chooses nothing")
    if not args.render:
        temperatures = [float(t) for t in args.main_temperatures.split(",")]
        jobs = [(seed, s, None, args.cache_dir, temperatures) for seed in seeds
                for s in bench_lib.plan(seed, 3, [0.3, 1.0, 3.0], 8) if s["family"] == "scratch"]
        started, rows = time.time(), []
        with tempfile.TemporaryDirectory(prefix="mixalign-closing-") as work:  # the targets, trained once
            jobs = [(*j[:2], work, *j[3:]) for j in jobs]
            with multiprocessing.get_context("spawn").Pool(max(args.workers, 1)) as pool:
                for row in pool.imap(study, jobs):
                    rows.append(row)
                    meta = {"seeds": seeds, **code_state(), "minutes": (time.time() - started) / 60,
                            "machine": machine()}
                    write_result(NAME, {"meta": meta, "targets": rows})
    saved = json.loads((RESULTS / f"{NAME}.json").read_text())
    text = markdown(saved["targets"], saved["meta"])
    print(text)
    if args.write:
        replace_section(REPO / "BENCHMARKS.md", "CLOSING_STUDY", text, RESULTS / f"{NAME}.json")

if __name__ == "__main__":
    main()
