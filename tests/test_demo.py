"""The shipped demo checkpoints and the main job's config (configs/pile.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from helpers import REPO, mixalign

from benchmarks._common import read_config
from mixalign.llvec.textset import load_textset
from mixalign.llvec.vectors import load_vector
from mixalign.model.checkpoint import (
    export_checkpoint,
    gpt_from_checkpoint,
    read_checkpoint,
)
from mixalign.model.nanogpt import GPTConfig

PILE = REPO / "configs" / "pile.yaml"
CHECKPOINTS = REPO / "checkpoints"


@pytest.mark.parametrize(
    "name, layers, width, context",
    [("base", 4, 128, 128), ("target", 6, 192, 256), ("near", 4, 128, 128)],
)
def test_shipped_checkpoints_load(name, layers, width, context):
    model, checkpoint = gpt_from_checkpoint(CHECKPOINTS / f"{name}.ckpt")
    assert (model.config.n_layer, model.config.n_embd, model.config.block_size) == (layers, width, context)
    assert model.config.vocab_size == 4096 and "tokenizer_json" in checkpoint["mixalign"]
    assert "optimizer_states" not in checkpoint  # slim: inference and continued training only


@pytest.mark.parametrize("name", ["target", "near"])
def test_shipped_target_vector_is_on_the_demo_text_set(name):
    vector = load_vector(CHECKPOINTS / f"{name}.npz")
    textset = load_textset("demo")
    assert vector.textset_hash == textset.hash and len(vector.values) == len(textset) == 1000
    assert vector.values.dtype.name == "float64" and (vector.values < 0).all()


def test_near_target_is_the_base_continued_on_its_published_mixture():
    base, _ = gpt_from_checkpoint(CHECKPOINTS / "base.ckpt")
    near, checkpoint = gpt_from_checkpoint(CHECKPOINTS / "near.ckpt")
    published = read_config("near.yaml")["data"]["weights"]
    assert published == read_config("target.yaml")["data"]["weights"]
    assert checkpoint["hyper_parameters"]["init_from"].endswith("checkpoints/base.ckpt")
    moved = [float((a - b).norm() / b.norm()) for a, b in zip(near.parameters(), base.parameters())]
    assert 0 < min(moved) and max(moved) < 0.5  # continued, not retrained: every tensor moved a little


def test_init_from_checkpoint_of_another_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match=r"another architecture \(n_layer: checkpoint 4 vs config 2"):
        gpt_from_checkpoint(CHECKPOINTS / "base.ckpt", expect=GPTConfig(2, 4, 128, 128, 4096))


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes((CHECKPOINTS / "base.ckpt").read_bytes()[:10_000])
    with pytest.raises(ValueError, match=r"broken.ckpt: cannot load checkpoint \(truncated or corrupt"):
        read_checkpoint(broken)


def test_export_keeps_only_what_inference_needs(tmp_path):
    source = tmp_path / "full.ckpt"
    full = read_checkpoint(CHECKPOINTS / "base.ckpt")
    full["optimizer_states"] = [{"state": {0: torch.zeros(1000)}}]
    full["loops"] = {"fit_loop": {}}
    torch.save(full, source)
    slim = read_checkpoint(export_checkpoint(source, tmp_path / "slim.ckpt"))
    assert "optimizer_states" not in slim and "loops" not in slim
    assert slim["state_dict"].keys() == full["state_dict"].keys()
    assert not list(tmp_path.glob(".*"))  # written atomically: no temporary left


def test_pile_yaml_passes_print_config(tmp_path):
    printed = mixalign("fit", "--config", str(PILE), "--print_config", cwd=REPO).stdout  # input paths absolute
    config = yaml.safe_load(printed)
    assert Path(config["model"]["init_from"]).resolve() == REPO / "checkpoints" / "base.ckpt"
    assert Path(config["mixture"]["target"]).resolve() == REPO / "checkpoints" / "near.ckpt"
    assert config["data"]["weights"] == "aligned" and "target" not in config["kl"]  # linked from it
    assert config["mixture"]["selection"] == "measured" and config["kl"]["exact_kl"] is True


def test_scratch_yaml_is_the_from_scratch_setting(tmp_path):
    printed = mixalign("fit", "--config", str(REPO / "configs" / "scratch.yaml"), "--print_config", cwd=REPO).stdout
    config = yaml.safe_load(printed)
    assert config["model"]["init_from"] is None and config["mixture"]["warmup_steps"] == 100
    assert Path(config["mixture"]["target"]).resolve() == REPO / "checkpoints" / "near.ckpt"
    assert config["data"]["weights"] == "aligned"
    assert config["model"]["learning_rate"] == 2.0e-3  # the base's own pretraining recipe, not pile.yaml's re-warm


@pytest.mark.slow
def test_pile_yaml_short_run_ends_with_summary(tmp_path, demo_cache):
    root = tmp_path / "run"
    out = mixalign(
        "fit", "--config", str(PILE), "--trainer.max_steps", "4", "--trainer.val_check_interval", "4",
        "--kl.n_texts", "16", "--mixture.n_texts", "16", "--mixture.probe_steps", "3",
        "--mixture.candidate_steps", "3", "--data.cache_dir", str(demo_cache), "--trainer.default_root_dir", str(root),
        "--mixture.cache_dir", str(root / "mixture_cache"), cwd=REPO,
    ).stdout
    (summary,) = [line for line in out.splitlines() if line.startswith("SUMMARY: ")]
    assert summary.startswith("SUMMARY: step 0 -> 4; KL to target, exact on the text set: model->target ")
    assert "log-likelihood-vector distance (Kishino et al. scale)" in summary and "weights: bible" in summary
    assert "mixture from step 0: " in summary
    assert "cos(A w, t)" in out  # the mixture was computed and its diagnostics printed
    run = root / "lightning_logs" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "mixture" / "round-0.yaml").is_file()
