"""GPT-2 weights from a local Hugging Face directory as `model.init_from` and `model.teacher`."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch
from helpers import REPO, TINY, mixalign, reported_metric, tiny

from mixalign.cli import main
from mixalign.data.tokenizer import EOT, load_tokenizer
from mixalign.errors import MixalignError
from mixalign.llvec.models import load_model, model_from_gpt
from mixalign.llvec.textset import load_textset, resolve_textset, subset_textset
from mixalign.model.checkpoint import gpt_from_checkpoint, load_gpt
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
    """Validating the init_from model gives the GPT-2's own val loss; KD steps move a student toward it."""
    validated = mixalign("validate", *tiny("--model.init_from", str(hf_dir), "--trainer.logger", "false",
                                           cache=demo_cache), cwd=tmp_path)
    assert reported_metric(validated.stdout, "val/loss") == pytest.approx(transformers_val_loss(hf_dir, demo_cache),
                                                                          abs=1e-4)
    # Pure distillation (alpha 1: no cross-entropy) of a random student toward the GPT-2 directory: only the
    # KD term can move it, so the exact KL to the teacher must fall. A KD term that gives no gradient (the
    # teacher's distribution detached from nothing, or alpha applied to the wrong term) leaves it where it was.
    out = mixalign("fit", *tiny("--model.teacher", str(hf_dir), "--model.distill_alpha", "1.0",
                                "--model.weight_decay", "0.0", "--mixture.target", str(hf_dir), "--kl.n_texts", "16",
                                "--trainer.max_steps", "8", "--trainer.val_check_interval", "8", cache=demo_cache),
                   cwd=tmp_path)
    (start, end), = re.findall(r"SUMMARY: step 0 -> 8; KL to target, exact on the text set: model->target "
                               r"(\d+\.\d+) -> (\d+\.\d+)", out.stdout)
    assert float(end) < 0.8 * float(start)


BASE = REPO / "checkpoints" / "base.ckpt"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The shipped base checkpoint through `mixalign export`."""
    out = tmp_path_factory.mktemp("export") / "base-hf"
    main(["export", "--ckpt", str(BASE), "--out", str(out)])
    return out


def test_an_exported_checkpoint_scores_through_transformers_as_in_mixalign(exported):
    textset = subset_textset(load_textset(resolve_textset("demo")), 16)
    ours = load_model(BASE).score(textset)
    theirs = load_model(exported).score(textset)  # a Hugging Face directory: scored through transformers
    assert theirs.n_windowed > 0 and ours.n_windowed == theirs.n_windowed  # long texts: windows on both sides
    np.testing.assert_allclose(theirs.values, ours.values, atol=1e-4, rtol=0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(exported, local_files_only=True)
    config = transformers.AutoConfig.from_pretrained(exported, local_files_only=True)
    assert isinstance(tokenizer, transformers.PreTrainedTokenizerFast) and tokenizer.eos_token == EOT
    assert tokenizer.eos_token_id == config.eos_token_id == tokenizer.convert_tokens_to_ids(EOT)
    again, _ = load_gpt(exported)  # and back: init_from reads the exported directory as the same weights
    base, _ = gpt_from_checkpoint(BASE)
    for name, value in base.state_dict().items():
        assert torch.equal(again.state_dict()[name], value), name


def test_export_refuses_to_overwrite_and_leaves_nothing_half_written(exported, capsys):
    before = sorted(p.name for p in exported.iterdir())
    with pytest.raises(SystemExit, match="2"):
        main(["export", "--ckpt", str(BASE), "--out", str(exported)])
    assert f"mixalign: error: {exported}: already exists; give another --out or remove it" in capsys.readouterr().err
    assert sorted(p.name for p in exported.iterdir()) == before
    assert before == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
    umask = os.umask(0)
    os.umask(umask)
    assert exported.stat().st_mode & 0o777 == 0o777 & ~umask  # readable as any new directory, not mkdtemp's 0700


def test_lm_eval_loads_an_exported_checkpoint_and_gets_mixalign_log_likelihoods(exported):
    """lm-eval's own Hugging Face model (HFLM) on the exported directory: its log p(continuation |
    context) is what the mixalign model gives for the same tokens."""
    pytest.importorskip("lm_eval.models.huggingface")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(exported), device="cpu", batch_size=1, dtype="float32")
    pairs = [("In the beginning God created", " the heaven and the earth."), ("def main():", "\n    return 0")]
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i) for i, pair in enumerate(pairs)]
    got = [logprob for logprob, _ in lm.loglikelihood(requests)]
    model, _ = gpt_from_checkpoint(BASE)
    ours = load_model(BASE)  # mixalign's own tokenizer of the checkpoint
    expected = []
    for context, continuation in pairs:
        ctx, cont = ours.encode_batch([context, continuation])
        ids = torch.tensor([ctx + cont])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids[:, :-1]).float(), dim=-1)[0]
        expected.append(sum(logprobs[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont)))
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert min(expected) < -1


@pytest.mark.parametrize("settings_file", ["config.json", "tokenizer_config.json"])
def test_a_directory_asking_to_run_its_own_code_is_refused_whatever_is_on_stdin(hf_dir, tmp_path, settings_file):
    """A model directory whose config maps a class to its own Python file (`auto_map`) runs nothing, even with
    "y" answered to every prompt: exit 2, the file named, no marker written. Guards `refuse_remote_code` and
    `trust_remote_code=False` (removing both lets transformers ask on stdin and run `custom.py`)."""
    import shutil
    import subprocess
    import sys

    evil = tmp_path / "evil"
    shutil.copytree(hf_dir, evil)
    marker = tmp_path / "ran"
    (evil / "custom.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n"
                                    "from transformers import GPT2LMHeadModel as Custom, GPT2Config as CustomConfig\n")
    settings = json.loads((evil / settings_file).read_text())
    settings["auto_map"] = {"AutoConfig": "custom.CustomConfig", "AutoModelForCausalLM": "custom.Custom",
                            "AutoTokenizer": ["custom.Custom", None]}
    (evil / settings_file).write_text(json.dumps(settings))
    result = subprocess.run([sys.executable, "-m", "mixalign", "kl", str(evil), str(REPO / "checkpoints/near.ckpt"),
                             "--n_texts", "4"], input="y\ny\ny\n", capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"{settings_file}: 'auto_map' asks to run the directory's own Python code" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not marker.exists()
