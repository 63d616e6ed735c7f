"""End to end: `mixalign weights`, fit on computed weights, cached probes, a known answer."""

from __future__ import annotations

import os
import re
import shutil

import pytest
import torch
import yaml
from helpers import DEMO_DOMAINS, REPO, TINY, mixalign, scalars, tiny, trained_probes

pytestmark = pytest.mark.slow


def mixture_args(target, *extra: str) -> list[str]:
    return ["--mixture.target", str(target), "--mixture.n_texts", "120", "--mixture.probe_steps", "20", *extra]


WITH_TEST_CALLBACKS = {"PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
SMALL_PROBES = ("--mixture.n_texts", "48", "--mixture.probe_steps", "8")  # for runs that only check the plumbing


@pytest.fixture(scope="module")
def weights_run(tmp_path_factory, demo_cache, tiny_target):
    work = tmp_path_factory.mktemp("weights")
    first = mixalign("weights", *tiny(*mixture_args(tiny_target), cache=demo_cache), "--out", "w.yaml", cwd=work)
    again = mixalign("weights", *tiny(*mixture_args(tiny_target), cache=demo_cache), "--out", "w2.yaml", cwd=work)
    return work, first.stdout, again.stdout


def replayed_choice(candidates: dict, long_run) -> str:
    """The selection rule replayed on the numbers the weights file gives (its own arithmetic, not the code's)."""
    import math

    uniform = candidates["uniform"]
    distance = (uniform["exact_to_target"] + uniform["exact_from_target"]) / 2
    predicted = {}
    for name, c in candidates.items():
        w = [x for x in c["weights"].values() if x > 0]
        concentration = sum(x * math.log(len(c["weights"]) * x) for x in w)
        if name != "uniform" and c["margin"] + 2 * c["margin_se"] < 0:
            predicted[name] = long_run[0] * c["margin"] / distance + long_run[1] * concentration
    eligible = {n: p for n, p in predicted.items() if p < 0}
    return min(eligible, key=eligible.get) if eligible else "uniform"


def test_weights_file_is_valid_with_diagnostics(weights_run, tiny_target):
    work, stdout, _ = weights_run
    content = yaml.safe_load((work / "w.yaml").read_text())
    weights = content["weights"]
    assert sorted(weights) == DEMO_DOMAINS
    assert sum(weights.values()) == pytest.approx(1.0) and min(weights.values()) >= 0
    diagnostics = content["diagnostics"]
    assert -1 <= diagnostics["mixture_cosine"] <= 1 and diagnostics["relative_residual"] >= 0
    assert sorted(diagnostics["domain_cosines"]) == DEMO_DOMAINS
    assert diagnostics["linearity_cosine"] is not None
    assert content["provenance"]["n_texts"] == 120 and len(content["provenance"]["textset_hash"]) == 64
    assert content["provenance"]["target"] == str(tiny_target) and content["provenance"]["textset"] == "demo"  # as given
    assert (work / "w.png").stat().st_size > 5_000
    # The measured selection: every candidate has its probe's exact KL to the target, and the chosen
    # mixture is the candidate whose weights the file gives.
    candidates = {c["name"]: c for c in diagnostics["candidates"]}
    assert {"uniform", "solution"} <= set(candidates)
    assert all(c["exact_to_target"] > 0 for c in candidates.values())
    assert candidates[content["chosen"]]["weights"] == pytest.approx(weights, abs=1e-9)
    selection = diagnostics["selection"]
    best = min(candidates.values(), key=lambda c: (c["exact_to_target"] + c["exact_from_target"]) / 2)
    assert selection["best"] == best["name"]
    assert content["chosen"] == replayed_choice(candidates, content["provenance"]["long_run"])
    assert trained_probes(stdout) == 1 + len(DEMO_DOMAINS) + len(candidates)  # base, domains, candidates
    assert {"kl-softmin 2.00"} <= set(candidates)  # the target shares the tokenizer; the default scale
    assert content["cost"]["probes"] == len(DEMO_DOMAINS) + len(candidates) and 0 < content["cost"]["share_of_main_run"]
    # The demo text set holds 2 email texts of 1,000; this 120-text subset none: the user is told.
    assert diagnostics["scarce_in_textset"] == {"email": 0}
    assert "warning: the text set has fewer than 5 texts of email 0" in stdout


def test_rerun_reuses_cached_probes(weights_run):
    work, _, again = weights_run
    assert trained_probes(again) == 0
    assert yaml.safe_load((work / "w.yaml").read_text())["weights"] == yaml.safe_load((work / "w2.yaml").read_text())["weights"]


def test_known_answer_two_dominant_domains(weights_run):
    """The target was trained from the same init on code 0.45, math 0.45, bible 0.1."""
    work, _, _ = weights_run
    content = yaml.safe_load((work / "w.yaml").read_text())
    assert content["chosen"] != "uniform"  # far from uniform: the measured selection keeps a solved mixture
    weights = content["weights"]
    assert set(sorted(weights, key=weights.get)[-2:]) == {"code", "math"}


def test_fit_on_weights_file_draws_those_proportions(weights_run, demo_cache, tiny_target):
    """With mixture.target also set (as `mixalign weights` left it), the file's weights are the ones
    trained on, and the run says the target only feeds the distance monitor."""
    work, _, _ = weights_run
    weights = yaml.safe_load((work / "w.yaml").read_text())["weights"]
    out = mixalign("fit", *tiny("--data.weights", "w.yaml", "--data.batch_size", "40", "--trainer.max_steps", "50",
                                "--trainer.val_check_interval", "50", "--trainer.log_every_n_steps", "50",
                                *mixture_args(tiny_target), "--kl.n_texts", "24",
                                "--trainer.default_root_dir", "on_weights", cache=demo_cache), cwd=work)
    text = out.stdout + out.stderr
    assert re.search(r"data\.weights is '\S*w\.yaml', so no mixture is computed", text) and "probes trained" not in text
    logged = scalars(work / "on_weights" / "lightning_logs" / "version_0")
    for domain in DEMO_DOMAINS:
        (step, frac), = logged[f"train/frac/{domain}"]
        assert step == 49  # 50 steps x 40 windows = 2,000 samples
        assert frac == pytest.approx(weights[domain], abs=0.02)
        assert logged[f"mixture/weight/{domain}"][-1][1] == pytest.approx(weights[domain], abs=1e-6)
    (summary,) = [line for line in out.stdout.splitlines() if line.startswith("SUMMARY")]
    trained = dict(re.findall(r"(\w+) (\d\.\d{3})", summary.split("weights: ")[1]))
    assert {d: float(w) for d, w in trained.items()} == pytest.approx(weights, abs=5e-4)


def test_aligned_training_ends_closer_to_target_than_uniform(weights_run, demo_cache, tiny_target):
    """Run beside `mixalign weights`: fit's own mixture computation finds every probe in the cache."""
    work, _, _ = weights_run
    final = {}
    for name in ("uniform", "aligned"):
        out = mixalign("fit", *tiny(*mixture_args(tiny_target), "--kl.n_texts", "120", "--data.weights", name,
                                    "--trainer.default_root_dir", name, cache=demo_cache), cwd=work).stdout
        logged = scalars(work / name / "lightning_logs" / "version_0")
        final[name] = logged["distance/exact_kl/model_to_target"][-1][1]
    assert trained_probes(out) == 0
    # The candidates measured are in the round's text table and chart, not one-point scalar charts.
    assert "candidate" in out and not any(tag.startswith("mixture/candidate") for tag in logged)
    assert final["aligned"] < 0.9 * final["uniform"]


def test_from_scratch_warmup_trains_uniform_then_the_computed_mixture(tmp_path, demo_cache, tiny_target):
    """tiny.yaml has no init_from: a random model warms up on uniform weights, then the mixture is
    computed from the model at step 6, and training goes on in train mode on that mixture."""
    out = mixalign("fit", *tiny(*mixture_args(tiny_target, *SMALL_PROBES), "--data.weights", "aligned", "--mixture.warmup_steps", "6",
                                "--mixture.selection", "solver", "--kl.n_texts", "24", "--trainer.max_steps", "12",
                                "--trainer.val_check_interval", "6", "--trainer.default_root_dir", "scratch",
                                "--trainer.callbacks+=train_mode.AssertTrainMode",  # fails a step taken in eval mode
                                cache=demo_cache), cwd=tmp_path, env=WITH_TEST_CALLBACKS)
    text = out.stdout + out.stderr
    assert "from-scratch warm-up, steps 0-5 on uniform weights" in text and "mixture for round 0 (from step 6)" in text
    assert re.search(r"^domain probes \(8 steps each\): (\d+)/\1 trained \(100%\), \d+ s$", text, re.M)  # progress
    run = tmp_path / "scratch" / "lightning_logs" / "version_0"
    computed = yaml.safe_load((run / "mixture" / "round-0.yaml").read_text())["weights"]
    logged = scalars(run)
    for domain, weight in computed.items():
        curve = logged[f"mixture/weight/{domain}"]
        assert curve[0] == (0, 0.125) and any(step >= 6 for step, _ in curve)
        assert all(w == (0.125 if step < 6 else pytest.approx(weight, abs=1e-6)) for step, w in curve)
    assert [step for step, _ in logged["distance/exact_kl/model_to_target"]] == [0, 6, 12]


def test_two_rounds_resumed_in_the_middle_continue_exactly(tmp_path, demo_cache, tiny_target):
    """Resumed at step 12 (round 1 began at 8), the run recomputes no mixture and ends as the straight run."""
    common = (*mixture_args(tiny_target, *SMALL_PROBES), "--data.weights", "aligned", "--mixture.rounds", "2",
              "--mixture.selection", "solver", "--kl.n_texts", "24", "--trainer.max_steps", "16",
              "--trainer.val_check_interval", "8", "--model.lr_decay_steps", "16",
              "--checkpoint.every_n_train_steps", "4", "--checkpoint.save_top_k", "-1")
    straight = mixalign("fit", *tiny(*common, "--trainer.default_root_dir", "straight", cache=demo_cache), cwd=tmp_path)
    assert "mixture for round 1 (from step 8)" in straight.stdout
    (middle,) = (tmp_path / "straight/lightning_logs/version_0/checkpoints").glob("*step=12.ckpt")
    resumed_dir = tmp_path / "resumed/lightning_logs/version_0/checkpoints"
    resumed_dir.mkdir(parents=True)
    shutil.copy(middle, resumed_dir / middle.name)
    resumed = mixalign("fit", *tiny(*common, "--trainer.default_root_dir", "resumed", "--ckpt_path",
                                    str(resumed_dir / middle.name), cache=demo_cache), cwd=tmp_path)
    assert "mixture for round" not in resumed.stdout  # both rounds' mixtures came back with the checkpoint
    summary = [re.findall(r"SUMMARY: .*", run.stdout) for run in (straight, resumed)]
    assert summary[0] == summary[1] and "from step 0:" in summary[0][0] and "from step 8:" in summary[0][0]
    ends = [torch.load(d / "last.ckpt", weights_only=True)["state_dict"]
            for d in (tmp_path / "straight/lightning_logs/version_0/checkpoints", resumed_dir)]
    for name, value in ends[0].items():
        assert torch.allclose(value, ends[1][name], atol=1e-6, rtol=0), name


def test_smoothing_toward_the_natural_prior_through_align(weights_run, demo_cache, tiny_target):
    """w <- (1 - a) w + a * natural, with natural the training data's token shares, end to end: the
    unsmoothed solution is the `solution` candidate of the module's weights file (same probes)."""
    from mixalign.data.datamodule import PileMixtureDataModule

    work, _, _ = weights_run
    mixalign("weights", *tiny(*mixture_args(tiny_target), "--mixture.selection", "solver", "--mixture.smoothing", "0.4",
                              "--mixture.prior", "natural", cache=demo_cache), "--out", "smooth.yaml", cwd=work)
    candidates = yaml.safe_load((work / "w.yaml").read_text())["diagnostics"]["candidates"]
    (raw,) = [c["weights"] for c in candidates if c["name"] == "solution"]
    smoothed = yaml.safe_load((work / "smooth.yaml").read_text())["weights"]
    datamodule = PileMixtureDataModule(**{**yaml.safe_load(TINY.read_text())["data"], "cache_dir": str(demo_cache)})
    datamodule.prepare_data()
    datamodule.setup("fit")
    tokens = {d: datamodule.data.count(d, "train") for d in datamodule.domains}
    for d, w in raw.items():
        assert smoothed[d] == pytest.approx(0.6 * w + 0.4 * tokens[d] / sum(tokens.values()), abs=1e-9)
    assert smoothed["email"] < 0.6 * raw["email"] + 0.4 / 8  # email is small: natural is not uniform


def test_provenance_names_a_saved_vector_target_as_given(tmp_path, demo_cache, tiny_target):
    """A .npz target is recorded as the file the user named, relative as typed, with no absolute path."""
    mixalign("score", "--model", str(tiny_target), "--n_texts", "48", "--out", "t.npz", cwd=tmp_path)
    mixalign("weights", *tiny("--mixture.target", "t.npz", *SMALL_PROBES, "--mixture.selection", "solver",
                              cache=demo_cache), "--out", "w.yaml", cwd=tmp_path)
    text = (tmp_path / "w.yaml").read_text()
    provenance = yaml.safe_load(text)["provenance"]
    assert provenance["target"] == "t.npz" and provenance["textset"] == "demo" and provenance["n_texts"] == 48
    assert str(tmp_path) not in text and str(tiny_target.parent) not in text


def test_max_epochs_caps_every_measured_mixture_and_the_answer(weights_run, demo_cache, tiny_target):
    """`mixture.max_epochs` end to end: every candidate measured, and the weights returned, read no
    domain's training tokens more than that many times over the run (mutation: caps unapplied in
    `measure_candidates` leave the solution's and uniform's small-domain shares over them)."""
    from mixalign.data.datamodule import PileMixtureDataModule
    from mixalign.mixture.repetition import passes

    work, _, _ = weights_run
    mixalign("weights", *tiny(*mixture_args(tiny_target), "--mixture.max_epochs", "0.05", cache=demo_cache),
             "--out", "capped.yaml", cwd=work)
    content = yaml.safe_load((work / "capped.yaml").read_text())
    config = yaml.safe_load(TINY.read_text())
    datamodule = PileMixtureDataModule(**{**config["data"], "cache_dir": str(demo_cache)})
    datamodule.prepare_data()
    datamodule.setup("fit")
    domains = datamodule.domains
    tokens = [datamodule.data.count(d, "train") for d in domains]
    round_tokens = config["trainer"]["max_steps"] * datamodule.batch_size * datamodule.block_size
    assert max(passes([1 / len(domains)] * len(domains), round_tokens, tokens)) > 0.05  # the cap binds on uniform
    for weights in [content["weights"], *(c["weights"] for c in content["diagnostics"]["candidates"])]:
        reads = passes([weights[d] for d in domains], round_tokens, tokens)
        assert sum(weights.values()) == pytest.approx(1.0, abs=1e-6) and max(reads) <= 0.05 + 1e-4, weights
