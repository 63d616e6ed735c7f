"""End to end: `mixalign weights`, fit on computed weights, cached probes, a known answer."""

from __future__ import annotations

import pytest
import yaml
from conftest import DEMO_DOMAINS, mixalign, scalars, tiny, trained_probes

pytestmark = pytest.mark.slow


def mixture_args(target, *extra: str) -> list[str]:
    return ["--mixture.target", str(target), "--mixture.n_texts", "120", "--mixture.probe_steps", "20", *extra]


@pytest.fixture(scope="module")
def weights_run(tmp_path_factory, demo_cache, tiny_target):
    work = tmp_path_factory.mktemp("weights")
    first = mixalign("weights", *tiny(*mixture_args(tiny_target), cache=demo_cache), "--out", "w.yaml", cwd=work)
    again = mixalign("weights", *tiny(*mixture_args(tiny_target), cache=demo_cache), "--out", "w2.yaml", cwd=work)
    return work, first.stdout, again.stdout


def test_weights_file_is_valid_with_diagnostics(weights_run):
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
    assert (work / "w.png").stat().st_size > 5_000
    # The measured selection: every candidate has its probe's exact KL to the target, and the chosen
    # mixture is the candidate whose weights the file gives.
    candidates = {c["name"]: c for c in diagnostics["candidates"]}
    assert {"uniform", "natural", "solution"} <= set(candidates)
    assert all(c["exact_to_target"] > 0 for c in candidates.values())
    assert candidates[content["chosen"]]["weights"] == pytest.approx(weights, abs=1e-9)
    selection = diagnostics["selection"]
    best = min(candidates.values(), key=lambda c: c["exact_to_target"])
    assert selection["best"] == best["name"] and content["chosen"] in (best["name"], "uniform")
    assert trained_probes(stdout) == 1 + len(DEMO_DOMAINS) + len(candidates)  # the base, domains, candidates
    assert {"kl-softmin 0.25", "kl-softmin 0.50", "kl-softmin 1.00"} <= set(candidates)  # the target shares the tokenizer
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


def test_fit_on_weights_file_draws_those_proportions(weights_run, demo_cache):
    work, _, _ = weights_run
    weights = yaml.safe_load((work / "w.yaml").read_text())["weights"]
    mixalign("fit", *tiny("--data.weights", "w.yaml", "--data.batch_size", "40", "--trainer.max_steps", "50",
                          "--trainer.val_check_interval", "50", "--trainer.log_every_n_steps", "50",
                          "--trainer.default_root_dir", "on_weights", cache=demo_cache), cwd=work)
    logged = scalars(work / "on_weights" / "lightning_logs" / "version_0")
    for domain in DEMO_DOMAINS:
        (step, frac), = logged[f"train/frac/{domain}"]
        assert step == 49  # 50 steps x 40 windows = 2,000 samples
        assert frac == pytest.approx(weights[domain], abs=0.02)
        assert logged[f"mixture/weight/{domain}"][-1][1] == pytest.approx(weights[domain], abs=1e-6)


def test_aligned_training_ends_closer_to_target_than_uniform(tmp_path, demo_cache, tiny_target):
    final = {}
    for name in ("uniform", "aligned"):
        mixalign("fit", *tiny(*mixture_args(tiny_target), "--kl.n_texts", "120", "--data.weights", name,
                              "--trainer.default_root_dir", name, cache=demo_cache), cwd=tmp_path)
        final[name] = scalars(tmp_path / name / "lightning_logs" / "version_0")["val/exact_kl/model_to_target"][-1][1]
    assert final["aligned"] < 0.9 * final["uniform"]
