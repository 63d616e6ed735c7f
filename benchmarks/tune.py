"""Choose the selection rule on the tuning draw, and only there.

Reads `results/robustness-tuning*.json` (written by `robustness.py --draw tuning --explore`, which
main-ran every candidate of every setting; a run of some families only has its own file). For every candidate it has the probe's margin over
uniform (paired SE), its concentration KL(w || uniform), and the main run's change against
uniform. It then

  1. fits the long-run model (`mixalign/mixture/predict.py`) on all of them, and reports its rank
     correlation with the main runs, leave-one-setting-out (each setting predicted by a fit on the
     others);
  2. replays selection rules on every setting, for each candidate set, and reports the gap closed
     (exact KL, uniform -> own mixture) per family and the settings made worse than uniform.

The chosen coefficients and candidate set go into configs/pile.yaml by hand, with this script's
output as their record. Writes results/tuning.json and BENCHMARKS.md's TUNING section (--write).

    python benchmarks/tune.py --write
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, replace_section, write_result  # noqa: E402
from benchmarks.robustness import FAMILIES  # noqa: E402
from mixalign.mixture.predict import (  # noqa: E402
    concentration,
    fit_long_run,
    predict_change,
)

REPO = Path(__file__).resolve().parents[1]
Z = 2.0  # the significance every rule uses (mixture.significance)
CANDIDATE_SETS = {"all": ("solution", "kl-softmin", "lag"), "kl-softmin + lag": ("kl-softmin", "lag"),
                  "lag": ("lag",), "kl-softmin": ("kl-softmin",),
                  "solution + kl-softmin": ("solution", "kl-softmin"),
                  "solution + kl-softmin 1.00, 2.00": ("solution", "kl-softmin 1.00", "kl-softmin 2.00"),
                  "solution + kl-softmin 2.00": ("solution", "kl-softmin 2.00"),
                  "solution + kl-softmin 1.00": ("solution", "kl-softmin 1.00"),
                  "solution + kl-softmin 2.00 + lag 2.00": ("solution", "kl-softmin 2.00", "lag 2.00")}  # generators, or
# single candidates by name


def points(row: dict) -> list[dict]:
    """The main-run candidates of one setting: name, family, m (probe margin), conc, M (main-run change), z."""
    out = []
    for c in row["candidates"]:
        if "main_minus_uniform" not in c:
            continue
        out.append({"name": c["name"], "family": c["name"].split()[0], "m": c["margin"],
                    "significant": c["margin"] + Z * c["margin_se"] < 0,
                    "weights": np.array(list(c["weights"].values())),
                    "conc": concentration(np.array(list(c["weights"].values()))),
                    "M": c["main_minus_uniform"],
                    "z": c["main_minus_uniform"] / c["main_minus_uniform_se"]})
    return out


def spearman(a, b) -> float:
    ra, rb = (np.argsort(np.argsort(v)).astype(float) for v in (a, b))
    return float(np.corrcoef(ra, rb)[0, 1]) if ra.std() > 0 and rb.std() > 0 else float("nan")


def fit(rows: list[list[dict]]) -> tuple[float, float]:
    pts = [p for ps in rows for p in ps]
    return fit_long_run(np.array([p["m"] for p in pts]), np.array([p["conc"] for p in pts]), np.array([p["M"] for p in pts]))


def choose(pts: list[dict], rule: str, coef) -> dict | None:
    """The candidate a rule keeps (None: uniform)."""
    if rule.startswith("always "):
        return next((p for p in pts if p["name"] == rule.removeprefix("always ")), None)
    if rule == "significant, lowest probe margin":
        coef = (1.0, 0.0)
    eligible = [p for p in pts if p["significant"] and predict(p, coef) < 0]
    return min(eligible, key=lambda p: predict(p, coef)) if eligible else None


def predict(p: dict, coef) -> float:
    return predict_change(p["m"], p["weights"], coef)


def replay(table: list[dict], per_setting: list[list[dict]], rule: str, families: tuple[str, ...]) -> dict:
    """Gap closed and worse-than-uniform counts of one rule on one candidate set, per family."""
    results = []
    for i, (row, pts) in enumerate(zip(table, per_setting)):
        pts = [p for p in pts if p["family"] in families or p["name"] in families]
        coef = fit([q for j, q in enumerate(per_setting) if j != i]) if rule == "long-run model" else None
        kept = choose(pts, rule, coef)
        gap = row["gap_uniform_minus_own"]
        change, z = (kept["M"], kept["z"]) if kept else (0.0, 0.0)
        results.append({"family": row["family"], "chosen": kept["name"] if kept else "uniform",
                        "gap_closed": -change / gap if gap > 0 else None, "z": z})
    return summary(results)


def summary(results: list[dict]) -> dict:
    def block(sub):
        closed = [r["gap_closed"] for r in sub if r["gap_closed"] is not None]
        return {"mean_gap_closed": float(np.mean(closed)) if closed else None,
                "worse_than_uniform": sum(r["z"] > 2 for r in sub), "worst_z": max((r["z"] for r in sub), default=0.0)}

    return {"all": block(results), **{f: block([r for r in results if r["family"] == f]) for f in FAMILIES},
            "chosen": [r["chosen"] for r in results]}


def tuning_draw() -> dict:
    """Every results file of the tuning draw (the whole draw, and runs of some families only), merged."""
    files = sorted(RESULTS.glob("robustness-tuning*.json"))
    saved = [json.loads(f.read_text()) for f in files]
    return {"meta": {"sources": [{"file": f.name, "code_hash": d["meta"]["code_hash"], "commit": d["meta"]["commit"]}
                                 for f, d in zip(files, saved)]},
            "targets": [row for d in saved for row in d["targets"]]}


def analyse(tuning: dict) -> dict:
    table = tuning["targets"]
    per_setting = [points(row) for row in table]
    coef = fit(per_setting)
    loso = []
    for i, pts in enumerate(per_setting):
        c = fit([q for j, q in enumerate(per_setting) if j != i])
        loso.append([(predict(p, c), p["M"]) for p in pts])
    within = [spearman([a for a, _ in s], [b for _, b in s]) for s in loso if len(s) > 2]
    pooled = [x for s in loso for x in s]
    probe_only = [spearman([p["m"] for p in pts], [p["M"] for p in pts]) for pts in per_setting if len(pts) > 2]
    rules = ["long-run model", "significant, lowest probe margin"] + [
        f"always {n}" for n in ("kl-softmin 1.00", "lag 1.00", "lag 2.00", "solution")]
    replays = {f"{rule} | {name}": replay(table, per_setting, rule, fams)
               for rule in rules for name, fams in CANDIDATE_SETS.items()
               if not rule.startswith("always ") or name == "all"}
    replays["as each file ran (robustness-tuning.json: the old min_gain, tie and band rule) | all"] = summary(
        [{"family": r["family"], "chosen": r["chosen"], "gap_closed": r["gap_closed"], "z": r["z_vs_uniform"]}
         for r in table])
    return {"coefficients": coef, "points": sum(map(len, per_setting)),
            "loso_spearman_within_setting_mean": float(np.nanmean(within)),
            "loso_spearman_pooled": spearman([a for a, _ in pooled], [b for _, b in pooled]),
            "probe_margin_spearman_within_setting_mean": float(np.nanmean(probe_only)),
            "rules": replays, "sources": tuning["meta"]["sources"]}


def markdown(result: dict) -> str:
    a, b = result["coefficients"]
    pct = lambda v: "-" if v is None else f"{v + 0.0:.0%}"  # noqa: E731
    sources = ", ".join(f"`results/{s['file']}` (code {s['code_hash']}, commit {s['commit']})" for s in result["sources"])
    lines = [f"From {sources}: {result['points']} main-run candidates. Long-run model fitted on all: "
             f"a = {a:.3f}, b = {b:.3f}. Rank correlation of its prediction with the main runs' change against "
             f"uniform, each setting predicted by a fit on the others: {result['loso_spearman_within_setting_mean']:.2f} "
             f"within a setting (mean), {result['loso_spearman_pooled']:.2f} pooled; the probe's margin alone: "
             f"{result['probe_margin_spearman_within_setting_mean']:.2f} within a setting.", "",
             "| rule | candidates | gap closed: all | continued | other-model | scratch | worse than uniform (worst z) |",
             "|---|---|---|---|---|---|---|"]
    for key, s in result["rules"].items():
        rule, cands = key.split(" | ")
        lines.append(f"| {rule} | {cands} | {pct(s['all']['mean_gap_closed'])} | "
                     + " | ".join(pct(s[f]["mean_gap_closed"]) for f in FAMILIES)
                     + f" | {s['all']['worse_than_uniform']} ({s['all']['worst_z']:+.1f}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="fill BENCHMARKS.md's TUNING section")
    args = parser.parse_args()
    result = analyse(tuning_draw())
    path = write_result("tuning", result)
    text = markdown(result)
    print(text)
    if args.write:
        replace_section(REPO / "BENCHMARKS.md", "TUNING", text, path)


if __name__ == "__main__":
    main()
