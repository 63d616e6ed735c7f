"""End to end: the LogLikelihoodKL callback on tiny runs (KL logged, vectors saved, map drawn, DDP)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import DEMO_DOMAINS, mixalign, reported_metric, scalars, tiny

from mixalign.llvec.estimators import estimate_kl
from mixalign.llvec.vectors import load_vector

pytestmark = pytest.mark.slow
N_TEXTS = "120"


def with_kl(target: Path, *extra: str) -> list[str]:
    return [
        "--mixture.target", str(target),  # the distance monitor (kl:) follows mixture.target
        "--kl.n_texts", N_TEXTS,
        *extra,
    ]


def kl(a, b) -> float:
    return estimate_kl(torch.from_numpy(a.values), torch.from_numpy(b.values), a.mean_bytes).kl_bits_per_byte


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory, demo_cache, tiny_target) -> dict[int, Path]:
    """Two 150-step runs with the callback (validating every 25), differing only in the init seed."""
    work = tmp_path_factory.mktemp("seeds")
    runs = {}
    for seed in (1, 2):
        mixalign("fit", *tiny("--seed_everything", str(seed), "--trainer.max_steps", "150", "--trainer.val_check_interval", "25",
                              "--trainer.default_root_dir", f"seed{seed}", *with_kl(tiny_target), cache=demo_cache),
                 cwd=work)
        runs[seed] = work / f"seed{seed}" / "lightning_logs" / "version_0"
    return runs


def test_distances_logged_at_every_validation_with_vectors_and_map(two_seeds):
    run = two_seeds[1]
    logged = scalars(run)
    steps = list(range(0, 151, 25))  # the start, then every validation, at the step the model has taken
    for tag in ("distance/llvec", "distance/exact_kl/model_to_target", "distance/exact_kl/target_to_model"):
        assert [step for step, _ in logged[tag]] == steps, tag
        assert len(logged[tag.replace("distance/", "distance_se/")]) == 7 and all(value > 0 for _, value in logged[tag])
    assert len(logged["val/ce_gap_to_target_nats_per_text"]) == 7
    for domain in DEMO_DOMAINS:
        if domain != "email":  # the 120-text subset holds no email text
            assert len(logged[f"distance_by_domain/llvec/{domain}"]) == 7
            for direction in ("model_to_target", "target_to_model"):
                assert len(logged[f"distance_by_domain/exact_kl/{direction}/{domain}"]) == 7
    # Exact KL is calibrated: far below the vector distance here, and it falls as the run learns.
    exact = [value for _, value in logged["distance/exact_kl/model_to_target"]]
    assert exact[-1] < exact[0] and exact[-1] < logged["distance/llvec"][-1][1]
    assert (run / "model_map.png").stat().st_size > 10_000
    # TensorBoard's first page (TIME SERIES) lists tag groups alphabetically: the distances lead, and
    # neither Lightning's constant `epoch` nor one-point candidate charts come before them.
    assert sorted({tag.split("/")[0] for tag in logged})[0] == "distance"
    assert "epoch" not in logged and not any(tag.startswith("mixture/candidate") for tag in logged)
    vectors = sorted((run / "llvec").glob("step-*.npz"))
    assert [v.name for v in vectors] == [f"step-{s:08d}.npz" for s in range(0, 151, 25)]
    # The logged value is the estimator applied to the saved vectors.
    target = load_vector(next((run.parents[1] / "llvec_cache").glob("vector-*.npz")))
    assert kl(load_vector(vectors[-1]), target) == pytest.approx(logged["distance/llvec"][-1][1], rel=1e-5)


def test_vector_distance_grows_along_training_and_seeds_end_farther_apart(two_seeds):
    """SPEC's scale: late adjacent checkpoints are closer than different seeds (measured 0.029 vs 0.093)."""
    a = [load_vector(p) for p in sorted((two_seeds[1] / "llvec").glob("step-*.npz"))]
    b = [load_vector(p) for p in sorted((two_seeds[2] / "llvec").glob("step-*.npz"))]
    assert kl(a[0], a[-1]) > kl(a[0], a[1])
    assert kl(a[-1], b[-1]) > kl(a[-2], a[-1])


METRICS = ("distance/llvec", "distance/exact_kl/model_to_target", "distance/exact_kl/target_to_model")


@pytest.fixture(scope="module")
def validated(tmp_path_factory, demo_cache, tiny_target, two_seeds) -> tuple[Path, list[str], str]:
    """`mixalign validate` of seed 1's last checkpoint on one process: (checkpoint, args, stdout)."""
    model = two_seeds[1] / "checkpoints" / "last.ckpt"
    args = tiny(f"--ckpt_path={model}", "--trainer.accelerator", "cpu", *with_kl(tiny_target), cache=demo_cache)
    return model, args, mixalign("validate", *args, "--trainer.devices", "1", cwd=tmp_path_factory.mktemp("one")).stdout


def test_ddp_two_processes_log_the_same_distances_as_one(tmp_path, demo_cache, tiny_target, validated):
    """Texts are sharded across ranks and gathered without duplicates: every distance is the same."""
    _, args, single = validated
    ddp = mixalign("validate", *args, "--trainer.devices", "2", "--trainer.strategy", "ddp", cwd=tmp_path).stdout
    for metric in METRICS:
        assert reported_metric(single, metric) > 0.001
        assert reported_metric(ddp, metric) == pytest.approx(reported_metric(single, metric), abs=1e-6), metric
    itself = mixalign("validate", *tiny(f"--ckpt_path={tiny_target}", *with_kl(tiny_target), cache=demo_cache),
                      cwd=tmp_path).stdout
    for metric in METRICS:
        assert reported_metric(itself, metric) == 0.0


def test_callback_scalars_equal_mixalign_kl_on_the_same_checkpoint(tmp_path, tiny_target, validated):
    model, _, logged = validated
    out = mixalign("kl", str(model), str(tiny_target), "--n_texts", N_TEXTS, "--out", "pair.json", cwd=tmp_path).stdout
    assert "llvec" in out and "exact a->b" in out
    (pair,) = json.loads((tmp_path / "pair.json").read_text())["pairs"]
    assert pair["llvec"]["kl_bits_per_byte"] == pytest.approx(reported_metric(logged, "distance/llvec"), abs=1e-6)
    assert pair["exact_a_to_b"]["bits_per_byte"] == pytest.approx(
        reported_metric(logged, "distance/exact_kl/model_to_target"), abs=1e-6)
    assert pair["exact_b_to_a"]["bits_per_byte"] == pytest.approx(
        reported_metric(logged, "distance/exact_kl/target_to_model"), abs=1e-6)


def test_saved_vector_target_gives_the_vector_distance_only_and_says_so(tmp_path, demo_cache, tiny_target):
    mixalign("score", "--model", str(tiny_target), "--n_texts", N_TEXTS, "--out", "target.npz", cwd=tmp_path)
    run = mixalign("fit", *tiny("--trainer.max_steps", "10", *with_kl(tmp_path / "target.npz"), cache=demo_cache),
                   cwd=tmp_path)
    assert "no exact KL (the target is a saved vector)" in run.stdout + run.stderr
    (summary,) = [line for line in run.stdout.splitlines() if line.startswith("SUMMARY")]
    assert "exact: not available" in summary and "log-likelihood-vector distance (Kishino et al. scale)" in summary
    logged = scalars(tmp_path / "runs" / "tiny" / "lightning_logs" / "version_0")
    assert "distance/llvec" in logged and not any(tag.startswith("distance/exact_kl") for tag in logged)


def test_monte_carlo_kl_at_the_end_of_training(tmp_path, demo_cache, tiny_target):
    run = mixalign("fit", *tiny("--trainer.max_steps", "10", *with_kl(tiny_target), "--kl.mc_samples", "16",
                                cache=demo_cache), cwd=tmp_path)
    logged = scalars(tmp_path / "runs" / "tiny" / "lightning_logs" / "version_0")
    for direction in ("model_to_target", "target_to_model"):
        (step, value), = logged[f"distance/mc_kl/{direction}"]
        assert step == 10 and value > 0 and logged[f"distance_se/mc_kl/{direction}"][0][1] > 0
        assert logged[f"distance/mc_kl/{direction}_text_level"][0][1] > 0  # shared tokenizer: the headline is along the paths
    (summary,) = [line for line in run.stdout.splitlines() if line.startswith("SUMMARY")]
    assert "Monte Carlo KL model->target" in summary and "KL to target, exact on the text set" in summary
    # summary.json says what the line says, as data; distances.png draws it.
    import json

    run_dir = tmp_path / "runs" / "tiny" / "lightning_logs" / "version_0"
    record = json.loads((run_dir / "summary.json").read_text())
    assert summary == f"SUMMARY: {record['summary']}" and record["step"] == 10
    first, last = record["distances"][0], record["distances"][-1]
    assert (f"model->target {first['exact_model_to_target']:.4f} -> {last['exact_model_to_target']:.4f}" in summary
            and f"{first['llvec_distance']:.4f} -> {last['llvec_distance']:.4f}" in summary)
    mc = record["monte_carlo"]["model_to_target"]
    assert f"{mc['bits_per_byte']:.4f} +- {mc['se']:.4f}" in summary and mc["label"] == "along the sampled token paths"
    assert sum(record["weights"].values()) == pytest.approx(1.0) and (run_dir / "distances.png").stat().st_size > 5_000
    # TensorBoard opens on the answer: the custom-scalars layout and one HPARAMS row with the final distances.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert "custom_scalars__config__" in events.Tags()["tensors"]
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    (exact,) = logged["summary/exact_kl_model_to_target"]
    assert f"{exact[1]:.4f}" == f"{last['exact_model_to_target']:.4f}"


def test_score_and_kl_subcommands(tmp_path, tiny_target, two_seeds):
    mixalign("score", "--model", str(tiny_target), "--n_texts", N_TEXTS, "--out", "target.npz", cwd=tmp_path)
    run = two_seeds[1]
    vectors = sorted((run / "llvec").glob("step-*.npz"))
    out = mixalign("kl", "target.npz", str(vectors[0]), str(vectors[-1]), "--map", "map.png", cwd=tmp_path).stdout
    assert "log-likelihood-vector distance" in out and (tmp_path / "map.png").exists()
    rows = [line.split() for line in out.splitlines() if line.startswith("target ")]
    assert len(rows) == 2 and float(rows[0][2]) > 0 and rows[0][5] == "-"  # vectors: no exact KL
    assert not (tmp_path / "model_map.png").exists()  # no map unless asked
    full = mixalign("score", "--model", str(tiny_target), "--out", "full.npz", cwd=tmp_path)
    mixed = mixalign("kl", "target.npz", "full.npz", cwd=tmp_path, check=False)
    assert mixed.returncode != 0 and "text set" in mixed.stderr
    assert "full.npz" in full.stdout


def test_kl_subcommand_with_monte_carlo_reports_the_path_figure_of_a_shared_tokenizer(tmp_path, tiny_target, two_seeds):
    """`mixalign kl A B --mc N`: both models share demo-4k, so the mc cells are the exact KL along the sampled
    paths (unmarked; a text-level figure would carry "t") and equal the JSON's path_exact figures."""
    import json

    model = two_seeds[1] / "checkpoints" / "last.ckpt"
    out = mixalign("kl", str(tiny_target), str(model), "--n_texts", "16", "--mc", "8", "--out", "pairs.json",
                   cwd=tmp_path).stdout
    assert "the exact KL summed along the sampled token paths" in out
    (row,) = [line for line in out.splitlines() if line.startswith("last.ckpt ")]
    cells = row.split("+-")
    assert len(cells) == 6 and not row.rstrip().endswith(" t")  # llvec, exact x2, mc x2: five figures
    (pair,) = json.loads((tmp_path / "pairs.json").read_text())["pairs"]
    mc = pair["mc_a_to_b"]
    assert mc["path_exact"] is not None and mc["horizon"] > 0 and mc["text"]["n"] == 8
    assert f"{mc['path_exact']['bits_per_byte']:.4f}" in row


def test_a_last_step_between_validations_is_measured_at_the_end_of_fit(tmp_path, demo_cache, tiny_target):
    """max_steps 7, validating every 3: the distances at 0, 3, 6 and at the end (7), and SUMMARY says 0 -> 7."""
    run = mixalign("fit", *tiny("--trainer.max_steps", "7", "--trainer.val_check_interval", "3",
                                *with_kl(tiny_target), "--kl.n_texts", "24", cache=demo_cache), cwd=tmp_path)
    version = tmp_path / "runs" / "tiny" / "lightning_logs" / "version_0"
    logged = scalars(version)
    for tag in ("distance/llvec", "distance/exact_kl/model_to_target"):
        assert [step for step, _ in logged[tag]] == [0, 3, 6, 7], tag
    assert [p.name for p in sorted((version / "llvec").glob("step-*.npz"))] == [
        f"step-{s:08d}.npz" for s in (0, 3, 6, 7)]
    (summary,) = [line for line in run.stdout.splitlines() if line.startswith("SUMMARY")]
    final = logged["distance/exact_kl/model_to_target"][-1][1]
    assert summary.startswith("SUMMARY: step 0 -> 7;") and f"-> {final:.4f}" in summary
