"""GPT-2 weights from a local Hugging Face directory as `model.init_from` and `model.teacher`."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from conftest import TINY, mixalign, reported_metric, tiny

from mixalign.data.tokenizer import EOT, load_tokenizer
from mixalign.errors import MixalignError
from mixalign.llvec.models import load_model, model_from_gpt
from mixalign.llvec.textset import load_textset, resolve_textset, subset_textset
from mixalign.model.checkpoint import load_gpt
from mixalign.model.module import NanoGPTModule

transformers = pytest.importorskip("transformers")
TINY_ARCH = dict(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=4096)  # configs/tiny.yaml's model


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A random GPT-2 of tiny.yaml's shape with the demo-4k tokenizer, saved as transformers saves one."""
    torch.manual_seed(3)
    config = transformers.GPT2Config(vocab_size=4096, n_positions=64, n_embd=64, n_layer=2, n_head=2,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # GPT-2's init leaves biases and LayerNorms at 0 and 1: make them count
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("hf") / "gpt2-tiny"
    model.save_pretrained(path)
    transformers.PreTrainedTokenizerFast(tokenizer_object=load_tokenizer("demo-4k"), eos_token=EOT).save_pretrained(path)
    return path


def test_init_from_a_hugging_face_gpt2_gives_its_log_likelihood_vector(hf_dir):
    textset = subset_textset(load_textset(resolve_textset("demo")), 12)
    module = NanoGPTModule(**TINY_ARCH, init_from=str(hf_dir))
    ours = model_from_gpt(module.model.eval(), load_tokenizer("demo-4k"), "init_from").score(textset)
    theirs = load_model(hf_dir).score(textset)  # scored through transformers
    assert ours.n_windowed > 0  # texts longer than 64 tokens: sliding windows on both sides
    np.testing.assert_allclose(ours.values, theirs.values, atol=1e-4, rtol=0)
    assert np.abs(ours.values).min() > 100  # real log-likelihoods, not zeros


def test_a_gpt2_directory_of_another_shape_or_kind_is_a_clear_error(hf_dir, tmp_path):
    with pytest.raises(MixalignError, match=r"gpt2-tiny: checkpoint is of another architecture \(n_layer: checkpoint 2 vs config 3"):
        load_gpt(hf_dir, expect=NanoGPTModule(**{**TINY_ARCH, "n_layer": 3}).config)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(MixalignError, match="model_type 'llama'"):
        load_gpt(tmp_path)


def transformers_val_loss(hf_dir, cache) -> float:
    """val/loss as `mixalign validate` defines it (mean over domains of the mean window loss), by transformers."""
    import yaml

    from mixalign.data.datamodule import PileMixtureDataModule

    data = yaml.safe_load(TINY.read_text())["data"]
    datamodule = PileMixtureDataModule(**{**data, "cache_dir": str(cache)})
    datamodule.prepare_data()
    datamodule.setup("validate")
    model = transformers.GPT2LMHeadModel.from_pretrained(hf_dir, local_files_only=True).eval()
    per_domain: dict[int, list[float]] = {}
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            logits = model(input_ids=batch["input"]).logits
            losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["target"], reduction="none")
            for domain, loss in zip(batch["domain"].tolist(), losses.mean(dim=1).tolist()):
                per_domain.setdefault(domain, []).append(loss)
    return float(np.mean([np.mean(v) for v in per_domain.values()]))


def test_fit_starts_from_and_distills_toward_a_gpt2_directory(hf_dir, tmp_path, demo_cache):
    """Validating the init_from model gives the GPT-2's own val loss; KD steps follow it as the teacher."""
    validated = mixalign("validate", *tiny("--model.init_from", str(hf_dir), "--trainer.logger", "false",
                                           cache=demo_cache), cwd=tmp_path)
    assert reported_metric(validated.stdout, "val/loss") == pytest.approx(transformers_val_loss(hf_dir, demo_cache),
                                                                          abs=1e-4)
    # Pure distillation (alpha 1, no weight decay) from the teacher itself: the loss KL(teacher || student)
    # starts at 0 with zero gradient, so 4 KD steps leave the student where it started (Adam turns float
    # noise into steps of ~1e-4 bits/byte), while half cross-entropy moves it to ~0.01 in this setting.
    out = mixalign("fit", *tiny("--model.init_from", str(hf_dir), "--model.teacher", str(hf_dir),
                                "--model.distill_alpha", "1.0", "--model.weight_decay", "0.0",
                                "--mixture.target", str(hf_dir), "--kl.n_texts", "16",
                                "--trainer.max_steps", "4", "--trainer.val_check_interval", "4", cache=demo_cache),
                   cwd=tmp_path)
    (kl,) = re.findall(r"SUMMARY: step 0 -> 4; KL to target, exact on the text set: model->target -?0\.0000 -> "
                       r"(\d\.\d+), target->model -?0\.0000", out.stdout)
    assert float(kl) < 0.001
