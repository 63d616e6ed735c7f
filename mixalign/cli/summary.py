"""What a finished run says about itself: the SUMMARY line, `summary.json` (everything the line says,
plus the mixture and its provenance) and `distances.png` (each distance over training)."""

from __future__ import annotations

import json
from pathlib import Path

from mixalign.callbacks.kl import LogLikelihoodKL
from mixalign.callbacks.mixture import AlignedMixture
from mixalign.data.datamodule import PileMixtureDataModule
from mixalign.io import atomic_path, write_bytes_atomic


def _callbacks(trainer) -> tuple[LogLikelihoodKL | None, AlignedMixture | None]:
    kl = next((c for c in trainer.callbacks if isinstance(c, LogLikelihoodKL) and c.active), None)
    mixture = next((c for c in trainer.callbacks if isinstance(c, AlignedMixture)), None)
    return (kl if kl is not None and kl.measurements else None), (mixture if mixture and mixture.summaries else None)


def summary_line(trainer, datamodule: PileMixtureDataModule) -> str:
    """One line a person can read at the end of a run: each distance moved, on which mixture."""
    weights = ", ".join(f"{d} {w:.3f}" for d, w in zip(datamodule.domains, datamodule.weights))
    kl, mixture = _callbacks(trainer)
    parts = [summary_distances(kl) if kl else f"trained to step {trainer.global_step}"]
    if mixture:
        parts.append(f"mixture {mixture.summary()}")
    return "; ".join(parts + [f"weights: {weights}"])


def summary_distances(kl: LogLikelihoodKL) -> str:
    """The first and last measurement of each distance the callback took, named for what it is."""
    first, last = kl.measurements[0], kl.measurements[-1]
    parts = [f"step {first.step} -> {last.step}"]
    if last.exact_model_to_target is not None:
        parts.append(f"KL to target, exact on the text set: model->target {first.exact_model_to_target:.4f} -> "
                     f"{last.exact_model_to_target:.4f}, target->model {first.exact_target_to_model:.4f} -> "
                     f"{last.exact_target_to_model:.4f} bits/byte")
    else:
        parts.append("KL to target, exact: not available (the target is not a model sharing the tokenizer)")
    for name, result in kl.monte_carlo.items():
        parts.append(f"Monte Carlo KL {name.replace('_to_', '->')} ({result.label}) "
                     f"{result.headline.bits_per_byte:.4f} +- {result.headline.se:.4f}")
    parts.append(f"log-likelihood-vector distance (Kishino et al. scale) {first.llvec_distance:.4f} -> "
                 f"{last.llvec_distance:.4f}")
    return "; ".join(parts)




def summary_record(trainer, datamodule: PileMixtureDataModule) -> dict:
    """The run's end as data: the SUMMARY line, every distance measured (bits/byte) by step, the Monte
    Carlo figures, the weights trained on, and each round's mixture file content (choice, candidates, cost,
    provenance)."""
    kl, mixture = _callbacks(trainer)
    record = {"step": trainer.global_step, "summary": summary_line(trainer, datamodule),
              "weights": dict(zip(datamodule.domains, map(float, datamodule.weights))),
              "target": kl.target if kl else None, "distances": [], "monte_carlo": {}, "mixture_rounds": {}}
    if kl:
        record["distances"] = [{"step": m.step, "exact_model_to_target": m.exact_model_to_target,
                                "exact_target_to_model": m.exact_target_to_model, "llvec_distance": m.llvec_distance}
                               for m in kl.measurements]
        record["monte_carlo"] = {name: {"label": r.label, "bits_per_byte": r.headline.bits_per_byte, "se": r.headline.se,
                                        "text_level": r.text.bits_per_byte, "horizon": r.horizon}
                                 for name, r in kl.monte_carlo.items()}
    if mixture:
        record["mixture_rounds"] = {str(step): content for step, content in sorted(mixture.summaries.items())}
    return record


def write_summary(trainer, datamodule: PileMixtureDataModule, run_dir: Path) -> None:
    """`summary.json` and, when distances were measured, `distances.png` in the run directory (atomically)."""
    record = summary_record(trainer, datamodule)
    write_bytes_atomic(run_dir / "summary.json", (json.dumps(record, indent=1, default=str) + "\n").encode())
    if record["distances"]:
        save_distance_plot(record["distances"], run_dir / "distances.png")


def save_distance_plot(distances: list[dict], path: Path) -> None:
    """Exact KL both ways (left axis) and the vector distance (right axis) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    steps = [d["step"] for d in distances]
    fig, left = plt.subplots(figsize=(6.4, 3.6))
    for key, label in (("exact_model_to_target", "exact KL model->target"), ("exact_target_to_model", "exact KL target->model")):
        if distances[0][key] is not None:
            left.plot(steps, [d[key] for d in distances], marker="o", label=label)
    left.set_xlabel("optimizer step")
    left.set_ylabel("exact KL (bits/byte)")
    right = left.twinx()
    right.plot(steps, [d["llvec_distance"] for d in distances], color="grey", linestyle="--", label="vector distance")
    right.set_ylabel("log-likelihood-vector distance (bits/byte)")
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    left.legend(handles, [h.get_label() for h in handles], loc="upper right", fontsize=8)
    left.set_title("distance to the target over training")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
