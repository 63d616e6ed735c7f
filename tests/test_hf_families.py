"""Targets of other Hugging Face families and tokenizers, end to end: a tiny GPT-NeoX and a tiny Llama,
with byte-level BPE tokenizers trained here on the demo text set (not the data's demo-4k), saved as
transformers saves them, through `score`, `kl --mc`, `weights`, the validation callback and `eval`.

Exact KL needs one tokenizer, so every figure that needs it must say why it is absent: the tests
check that it does, and that the figures that do not need it (the vector distance, the text-level
Monte Carlo KL, task accuracy) are there and finite.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import yaml
from helpers import REPO, mixalign, tiny

from mixalign.llvec.textset import load_textset, resolve_textset

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.slow
VOCAB = 384


def trained_tokenizer():
    """A byte-level BPE of VOCAB tokens on 400 demo texts, with an end-of-text and a begin token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    texts = list(load_textset(resolve_textset("demo")).texts)[:400]
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<|endoftext|>", "<s>"],
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tokenizer


def build(family: str, path):
    """A random tiny model of `family` with the trained tokenizer (Llama's adds <s> to every text)."""
    torch.manual_seed(0)
    shape = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                 max_position_embeddings=128)
    tokenizer = trained_tokenizer()
    if family == "gpt-neox":
        model = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**shape, bos_token_id=0, eos_token_id=0))
        hf_tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>",
                                                            bos_token="<|endoftext|>")
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**shape, num_key_value_heads=1, bos_token_id=1,
                                                                       eos_token_id=0))
        hf_tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>",
                                                            bos_token="<s>", add_bos_token=True)
    model.eval().save_pretrained(path)
    hf_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=["gpt-neox", "llama"])
def family_dir(request, tmp_path_factory):
    return build(request.param, tmp_path_factory.mktemp(request.param) / request.param)


def test_score_and_kl_with_monte_carlo_across_tokenizers(family_dir, tmp_path):
    """The vector and the text-level Monte Carlo KL are figures; exact KL is '-' and the legend says why."""
    scored = mixalign("score", "--model", str(family_dir), "--n_texts", "16", "--out", "v.npz", cwd=tmp_path).stdout
    assert "v.npz: 16 texts" in scored
    out = mixalign("kl", str(family_dir), str(REPO / "checkpoints" / "base.ckpt"), "--n_texts", "16", "--mc", "4",
                   cwd=tmp_path).stdout
    assert "exact a->b: KL(a || b), exact on the text set (models sharing a tokenizer)" in out
    (row,) = [line for line in out.splitlines() if line.startswith(family_dir.name)]
    llvec, mc_ab, mc_ba = re.findall(r"(\d+\.\d+) \+- \d+\.\d+", row)[:3]
    assert row.count(" - ") >= 2 and row.rstrip().endswith("t")  # no exact figure; Monte Carlo text-level
    assert all(math.isfinite(float(x)) and float(x) > 0 for x in (llvec, mc_ab, mc_ba))


def test_weights_and_the_callback_toward_another_family(family_dir, tmp_path, demo_cache):
    """`weights` measures the candidates in vector distance and says why kl-softmin is absent; `fit`'s
    callback logs the vector distance at every validation and its SUMMARY says why exact KL is absent."""
    out = mixalign("weights", *tiny("--mixture.target", str(family_dir), "--mixture.n_texts", "24",
                                    "--mixture.probe_steps", "3", "--mixture.candidate_steps", "3",
                                    "--mixture.cache_dir", str(tmp_path / "cache"), cache=demo_cache),
                   "--out", "w.yaml", cwd=tmp_path).stdout
    assert "no exact KL (the target is not a model sharing the data's tokenizer): kl-softmin is skipped" in out
    content = yaml.safe_load((tmp_path / "w.yaml").read_text())
    names = [c["name"] for c in content["diagnostics"]["candidates"]]
    assert names[0] == "uniform" and not any(n.startswith("kl-softmin") for n in names)
    assert all(c["exact_to_target"] is None for c in content["diagnostics"]["candidates"])
    assert sum(content["weights"].values()) == pytest.approx(1.0)
    fit = mixalign("fit", *tiny("--mixture.target", str(family_dir), "--data.weights", "uniform", "--kl.n_texts", "24",
                                "--trainer.max_steps", "4", "--trainer.val_check_interval", "2",
                                "--trainer.default_root_dir", str(tmp_path / "runs"), cache=demo_cache),
                   cwd=tmp_path).stdout
    (summary,) = re.findall(r"SUMMARY: (.*)", fit)
    assert "KL to target, exact: not available (the target is not a model sharing the tokenizer)" in summary
    start, end = map(float, re.search(r"log-likelihood-vector distance \(Kishino et al. scale\) (\S+) -> (\S+);",
                                      summary).groups())
    assert math.isfinite(start) and math.isfinite(end) and start > 0
    saved = json.loads(next((tmp_path / "runs").rglob("summary.json")).read_text())
    assert [d["step"] for d in saved["distances"]] == [0, 2, 4]
    assert all(d["exact_model_to_target"] is None and d["llvec_distance"] > 0 for d in saved["distances"])


def test_eval_with_a_target_of_another_family(family_dir, tmp_path):
    """lm-eval scores the target directory and a mixalign checkpoint on the demo tasks (a few items)."""
    pytest.importorskip("lm_eval")
    mixalign("eval", "--target", str(family_dir), "--models", str(REPO / "checkpoints" / "base.ckpt"),
             "--limit", "4", "--out", "ev", cwd=tmp_path)
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert set(report["models"]) == {family_dir.name, "base"} and (tmp_path / "ev" / "eval.png").exists()
    tasks = report["models"]["base"]["tasks"]
    assert tasks and all(t["n"] == 4 and 0 <= t["acc"] <= 1 and 0 <= t["agreement"] <= 1 for t in tasks.values())
    assert report["models"][family_dir.name]["mean_agreement"] == 1.0  # the target agrees with itself
