"""`mixalign kl`: every distance between models or saved vectors, printed as a table (and written as JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from mixalign.cli.parsing import _parser, _textset, default_device, output_path
from mixalign.io import write_bytes_atomic
from mixalign.llvec.compare import Measured, pair_distances
from mixalign.llvec.models import load_model
from mixalign.llvec.plots import save_model_map
from mixalign.llvec.vectors import check_same_textset, load_vector, vector_from_scores
from mixalign.units import DEFAULT_SEED


def _measured(spec: str, textset, device: str, max_batch_tokens) -> Measured:
    """A `.npz` vector as it is; a model (checkpoint or HF directory) loaded and scored on the text set."""
    if spec.endswith(".npz"):
        return Measured(Path(spec).stem, load_vector(spec))
    model = load_model(spec, device=device)
    result = model.score(textset, max_batch_tokens=max_batch_tokens, progress=f"scoring {Path(spec).name}")
    return Measured(Path(spec).name, vector_from_scores(result, textset, model.description), model)


def _cell(value) -> str:
    """One distance as `bits/byte +- standard error`, or `-` where it was not measured."""
    if value is None:
        return "-"
    if hasattr(value, "headline"):  # MonteCarloKL: along the paths, or text-level marked "t" (see _print_pairs)
        return _cell(value.headline) + ("" if value.path_exact is not None else " t")
    if hasattr(value, "kl_bits_per_byte"):  # the vector estimate
        return f"{value.kl_bits_per_byte:.4f} +- {value.se_bits_per_byte:.4f}"
    return f"{value.bits_per_byte:.4f} +- {value.se:.4f}"


def _print_pairs(pairs, first, mc: int) -> None:
    """The table: a legend of what each column measures, then one row per pair."""
    print(f"bits/byte +- standard error; text set {first.textset_hash[:12]}, N = {len(first)}, B = {first.mean_bytes:.1f} bytes")
    print("  llvec: log-likelihood-vector distance (Kishino et al. scale; symmetric; not a calibrated KL)")
    print("  exact a->b: KL(a || b), exact on the text set (models sharing a tokenizer)")
    print(f"  mc a->b: Monte Carlo KL(a || b) from {mc} samples of a: the exact KL summed along the sampled token "
          "paths where a and b share a tokenizer, else (t) text-level, the samples re-encoded by each tokenizer"
          if mc else "  mc: off (--mc N)")
    width = max(8, *(len(p.a) for p in pairs), *(len(p.b) for p in pairs))
    header = ["a", "b", "llvec", "exact a->b", "exact b->a", "mc a->b", "mc b->a"]
    rows = [[p.a, p.b] + [_cell(v) for v in (p.llvec, p.exact_a_to_b, p.exact_b_to_a, p.mc_a_to_b, p.mc_b_to_a)]
            for p in pairs]
    for row in [header] + rows:
        print(f"{row[0]:<{width}} {row[1]:<{width}} " + " ".join(f"{cell:>18}" for cell in row[2:]))


def kl_main(args: list[str]) -> None:
    """Every distance between models or saved vectors, pair by pair, in bits/byte +- standard error:
    the log-likelihood-vector distance, exact KL both ways (models sharing a tokenizer) and, with
    --mc N, Monte Carlo KL both ways (any two models)."""
    parser = _parser("kl", kl_main)
    parser.add_argument("inputs", nargs="+", help="two or more: .npz vectors, mixalign checkpoints or local HF directories")
    parser.add_argument("--textset", default="demo", help="text set the models are scored on ('demo' or a file)")
    parser.add_argument("--n_texts", type=Optional[int], default=None, help="score an evenly spaced subset")
    parser.add_argument("--mc", type=int, default=0, help="Monte Carlo KL from this many samples each way (0: none)")
    parser.add_argument("--mc_seed", type=int, default=DEFAULT_SEED, help="fixes the Monte Carlo samples")
    parser.add_argument("--device", default=default_device(), help="default: cuda where there is a GPU")
    parser.add_argument("--max_batch_tokens", type=Optional[int], default=None, help="default: by device")
    parser.add_argument("--map", type=Optional[str], default=None, help="also draw a model map PNG here (3+ inputs)")
    parser.add_argument("--out", type=Optional[str], default=None, help="write every figure, full precision, as JSON")
    cfg = parser.parse_args(args)
    if len(cfg.inputs) < 2:
        parser.error("give at least two vectors or models")
    output_path(cfg.out)
    output_path(cfg.map, "--map")
    textset = _textset(cfg.textset, cfg.n_texts) if any(not i.endswith(".npz") for i in cfg.inputs) else None
    measured = [_measured(item, textset, cfg.device, cfg.max_batch_tokens) for item in cfg.inputs]
    check_same_textset(*(m.vector for m in measured))
    pairs = [pair_distances(a, b, textset, cfg.mc, cfg.mc_seed, cfg.max_batch_tokens, progress=True)
             for i, a in enumerate(measured) for b in measured[i + 1:]]
    first = measured[0].vector
    _print_pairs(pairs, first, cfg.mc)
    if cfg.out:
        write_bytes_atomic(cfg.out, json.dumps({"textset_hash": first.textset_hash, "n_texts": len(first),
                                                "mean_bytes": first.mean_bytes, "mc_samples": cfg.mc,
                                                "pairs": [p.to_dict() for p in pairs]}, indent=1).encode())
        print(f"written: {cfg.out}")
    if cfg.map and len(measured) >= 3:
        save_model_map([m.vector for m in measured], [m.name for m in measured], cfg.map)
        print(f"model map: {cfg.map}")
