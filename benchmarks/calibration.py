"""Calibration: the log-likelihood-vector distance beside exact and Monte Carlo KL, on real model pairs.

For each pair: the vector distance (Kishino et al.'s estimate, docs/method.md, section 2), the exact token-level
KL on the text set both ways, and the Monte Carlo KL both ways (with the shared tokenizer the exact KL
summed along the sampled paths, the figure mixalign reports; beside it the text-level figure). Then the vector distance again on the same texts
cut into chunks of 8, 32 and 128 tokens: the estimate grows with text length, exact KL does not.

Pairs: the shipped target and base; the target and the main job's result (configs/pile.yaml as
shipped); the base and the base after 200 uniform steps (pile.yaml's settings, no mixture); two
checkpoints 100 steps apart; and, if present, the shipped near target with the base and with the main job's result.

    python benchmarks/calibration.py            # about 25 min on 2 CPU cores
    python benchmarks/calibration.py --shipped  # only the shipped pairs, no training runs (minutes)
    python benchmarks/calibration.py --quick    # tiny sizes, a smoke run
    python benchmarks/calibration.py --render   # only the tables again, from benchmarks/results/calibration.json

Writes benchmarks/results/calibration.{json,md}; the full run also fills BENCHMARKS.md and README.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import (  # noqa: E402
    RESULTS,
    add_run_arguments,
    replace_section,
    set_threads,
    write_result,
)

from mixalign.io import write_bytes_atomic  # noqa: E402
from mixalign.llvec.compare import Measured, pair_distances  # noqa: E402
from mixalign.llvec.estimators import estimate_kl  # noqa: E402
from mixalign.llvec.models import load_model  # noqa: E402
from mixalign.llvec.scoring import ScoreResult, token_logprobs  # noqa: E402
from mixalign.llvec.textset import load_textset, subset_textset  # noqa: E402
from mixalign.llvec.vectors import vector_from_scores  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHECKPOINTS = REPO / "checkpoints"
CHUNKS = (8, 32, 128)
STEP, STEP_QUICK = 100, 10  # checkpoints of the uniform run: at STEP and 2 STEP


def fit(out: Path, name: str, *overrides: str) -> Path:
    """`mixalign fit --config configs/pile.yaml` with overrides; the run's directory."""
    root = out / "runs" / name
    subprocess.run([sys.executable, "-m", "mixalign", "fit", "--config", str(REPO / "configs" / "pile.yaml"),
                    "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root),
                    "--checkpoint.dirpath", str(root / "checkpoints"), "--mixture.cache_dir", str(out / "mixture_cache"),
                    *overrides], cwd=REPO, check=True, capture_output=True, text=True)
    return root / "checkpoints"


def shipped() -> dict[str, Path]:
    models = {"target": CHECKPOINTS / "target.ckpt", "base": CHECKPOINTS / "base.ckpt"}
    if (CHECKPOINTS / "near.ckpt").exists():
        models["near target"] = CHECKPOINTS / "near.ckpt"
    return models


def checkpoints(out: Path, quick: bool, cache_dir: str) -> dict[str, Path]:
    """The models of the table: shipped ones and the runs this script trains."""
    step = STEP_QUICK if quick else STEP
    small = ["--kl.n_texts", "40", "--mixture.n_texts", "40", "--mixture.probe_steps", "3"] if quick else []
    uniform = fit(out, "uniform", "--mixture.target", "null", "--data.weights", "uniform", "--data.cache_dir", cache_dir,
                  "--trainer.max_steps", str(2 * step), "--trainer.val_check_interval", str(step),
                  "--checkpoint.every_n_train_steps", str(step), "--checkpoint.save_top_k", "-1", *small)
    main = fit(out, "main", "--data.cache_dir", cache_dir, *small,
               *(["--trainer.max_steps", "4", "--trainer.val_check_interval", "4"] if quick else []))
    return {**shipped(), f"base +{step} uniform": next(uniform.glob(f"*step={step}.ckpt")),
            f"base +{2 * step} uniform": next(uniform.glob(f"*step={2 * step}.ckpt")), "main job": main / "last.ckpt"}


def chunk_vectors(model, per_token: list[np.ndarray], textset, k: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-chunk log-likelihoods and byte lengths: consecutive k scored tokens of each text (whole texts for None).

    Byte lengths come from the tokenizer's character offsets of the chunk's first and last token.
    """
    if k is None:
        return np.array([lp.sum() for lp in per_token]), textset.n_bytes.astype(float)
    values, n_bytes = [], []
    for text, lp in zip(textset.texts, per_token):
        offsets = model.tokenizer.encode(text, add_special_tokens=False).offsets[1:]  # the scored tokens
        for start in range(0, len(lp) - k + 1, k):
            values.append(lp[start : start + k].sum())
            n_bytes.append(len(text[offsets[start][0] : offsets[start + k - 1][1]].encode("utf-8")))
    return np.array(values), np.array(n_bytes, dtype=float)


def measure(models: dict[str, Path], pairs: list[tuple[str, str]], textset, mc: int, seed: int) -> list[dict]:
    loaded = {name: load_model(path) for name, path in models.items()}
    per_token = {name: token_logprobs(m.logprob_fn, m.encode_batch(textset.texts), m.context, m.bos_id)
                 for name, m in loaded.items() if any(name in pair for pair in pairs)}
    rows = []
    for a, b in pairs:
        t0 = time.time()
        measured = []
        for name in (a, b):
            values = np.array([lp.sum() for lp in per_token[name]])
            result = ScoreResult(values, 0, np.array([len(lp) for lp in per_token[name]]))
            measured.append(Measured(name, vector_from_scores(result, textset, name), loaded[name]))
        pair = pair_distances(*measured, textset, mc_samples=mc, mc_seed=seed)
        chunked = {}
        for k in (*CHUNKS, None):
            (va, nb), (vb, _) = (chunk_vectors(loaded[n], per_token[n], textset, k) for n in (a, b))
            estimate = estimate_kl(torch.from_numpy(va), torch.from_numpy(vb), float(nb.mean()))
            chunked["whole" if k is None else str(k)] = {"llvec": estimate.kl_bits_per_byte, "n": len(va),
                                                         "mean_bytes": float(nb.mean())}
        rows.append({"a": a, "b": b, **pair.to_dict(), "chunked": chunked, "seconds": time.time() - t0})
        print(f"{a} / {b}: {rows[-1]['seconds']:.0f} s", flush=True)
    return rows


def fmt(value: dict | None, key: str = "bits_per_byte", se: str = "se") -> str:
    return "-" if value is None else f"{value[key]:.4f} ± {value[se]:.4f}"


def report(rows: list[dict], textset, mc: int) -> tuple[str, str]:
    """(the full markdown for BENCHMARKS.md, the short one for README.md). With the shared tokenizer the
    product's Monte Carlo KL (`distance/mc_kl`) is the exact KL summed along the sampled paths; the
    text-level figure (`..._text_level`, re-encoded samples) stands beside it in the full table."""
    head = (f"bits/byte ± standard error; {len(textset)} texts of the demo text set (B = {textset.mean_bytes:.1f} bytes); "
            f"Monte Carlo from {mc} samples of a (and of b): \"along paths\" is the exact KL summed along the "
            "sampled token paths (what `mixalign` reports with a shared tokenizer), \"text level\" re-encodes the "
            "same samples (the figure across tokenizers).")
    lines = [head, "", "| a | b | log-likelihood-vector distance | exact KL a->b | exact KL b->a | Monte Carlo along paths "
             "a->b | Monte Carlo along paths b->a | text level a->b / b->a | vector / exact |", "|" + "---|" * 9]
    short = ["| pair | log-likelihood-vector distance | exact KL (a->b / b->a) | Monte Carlo KL, along paths (a->b / b->a) |",
             "|---|---|---|---|"]
    for r in rows:
        exact = (r["exact_a_to_b"]["bits_per_byte"] + r["exact_b_to_a"]["bits_per_byte"]) / 2
        llvec = fmt(r["llvec"], "kl_bits_per_byte", "se_bits_per_byte")
        path_a, path_b = (r[k]["path_exact"] if r[k] else None for k in ("mc_a_to_b", "mc_b_to_a"))
        text = " / ".join(f"{r[k]['text']['bits_per_byte']:.4f}" if r[k] else "-" for k in ("mc_a_to_b", "mc_b_to_a"))
        lines.append(f"| {r['a']} | {r['b']} | {llvec} | {fmt(r['exact_a_to_b'])} | {fmt(r['exact_b_to_a'])} | "
                     f"{fmt(path_a)} | {fmt(path_b)} | {text} | {r['llvec']['kl_bits_per_byte'] / exact:.1f}x |")
        short.append(f"| {r['a']} vs {r['b']} | {r['llvec']['kl_bits_per_byte']:.3f} | "
                     f"{r['exact_a_to_b']['bits_per_byte']:.3f} / {r['exact_b_to_a']['bits_per_byte']:.3f} | "
                     + (f"{path_a['bits_per_byte']:.3f} / {path_b['bits_per_byte']:.3f} |" if path_a else "- |"))
    lines += ["", "The vector distance on the same texts cut into chunks of k tokens (bits/byte):", "",
              "| a | b | " + " | ".join(f"{k} tokens" for k in CHUNKS) + " | whole texts |", "|" + "---|" * (len(CHUNKS) + 3)]
    for r in rows:
        lines.append(f"| {r['a']} | {r['b']} | " + " | ".join(f"{r['chunked'][k]['llvec']:.3f}"
                                                             for k in (*map(str, CHUNKS), "whole")) + " |")
    return "\n".join(lines), "\n".join(short)


def publish(result: Path, out: Path, quick: bool) -> None:
    """calibration.md, and the BENCHMARKS.md and README.md sections (full runs), from a results file."""
    record = json.loads(result.read_text(encoding="utf-8"))
    textset = load_textset("demo")
    textset = subset_textset(textset, record["n_texts"]) if record["n_texts"] < len(textset) else textset
    full, short = report(record["rows"], textset, record["mc_samples"])
    minutes = record.get("wall_minutes") or sum(r["seconds"] for r in record["rows"]) / 60
    what = "wall time" if "wall_minutes" in record else "measuring the pairs took (the trained models' runs not counted)"
    full += f"\n\nMachine: {record['machine']['cpu_model']}, {record['machine']['nproc']} cores; {what} {minutes:.0f} min."
    if record["shipped_only"]:
        full += ("\n\nOnly the shipped pair (`--shipped`); the rows with trained models come from the full run, "
                 "`python benchmarks/calibration.py`.")
    print(full)
    write_bytes_atomic(out / "calibration.md", (full + "\n").encode())
    if not quick:
        replace_section(REPO / "BENCHMARKS.md", "CALIBRATION", full, result)
        replace_section(REPO / "README.md", "CALIBRATION", short, result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, "tiny sizes (a smoke test): 40 texts, 8 samples, runs of a few steps")
    parser.add_argument("--mc", type=int, default=512, help="Monte Carlo samples each way")
    parser.add_argument("--seed", type=int, default=1337, help="fixes the Monte Carlo samples")
    parser.add_argument("--out", default=str(RESULTS), help="results directory")
    parser.add_argument("--shipped", action="store_true", help="only the shipped pairs: no training runs")
    parser.add_argument("--render", action="store_true", help="only rewrite the tables from <out>/calibration.json")
    args = parser.parse_args()
    if args.render:
        return publish(Path(args.out) / "calibration.json", Path(args.out), args.quick)
    set_threads(args.threads)
    out = Path(args.out)
    started = time.time()
    models = shipped() if args.shipped else checkpoints(out, args.quick, args.cache_dir)
    step = STEP_QUICK if args.quick else STEP
    one, two = f"base +{step} uniform", f"base +{2 * step} uniform"
    pairs = [("target", "base")] + ([] if args.shipped else [("target", "main job"), ("base", two), (one, two)])
    if "near target" in models:
        pairs += [("near target", "base")] + ([] if args.shipped else [("near target", "main job")])
    textset = load_textset("demo")
    textset = subset_textset(textset, 40) if args.quick else textset
    mc = 8 if args.quick else args.mc
    rows = measure(models, pairs, textset, mc, args.seed)
    result = write_result("calibration", {"rows": rows, "mc_samples": mc, "n_texts": len(textset),
                                          "shipped_only": args.shipped, "wall_minutes": (time.time() - started) / 60}, out)
    publish(result, out, args.quick)


if __name__ == "__main__":
    main()
