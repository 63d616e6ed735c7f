"""`mixalign export`: a checkpoint as a Hugging Face GPT-2 directory."""

from __future__ import annotations

from mixalign.cli.parsing import _parser, output_path
from mixalign.data.tokenizer import EOT
from mixalign.errors import MixalignError
from mixalign.model.checkpoint import load_gpt
from mixalign.model.hf_gpt2 import save_hf_gpt2


def export_main(args: list[str]) -> None:
    """A mixalign checkpoint as a Hugging Face GPT-2 directory (config.json, model.safetensors, and
    its tokenizer as a PreTrainedTokenizerFast with the end-of-text token) that transformers, lm-eval
    and vLLM load: GPT2LMHeadModel computes the same log-likelihoods (tests/test_hf_gpt2.py)."""
    parser = _parser("export", export_main)
    parser.add_argument("--ckpt", required=True, help="mixalign checkpoint (.ckpt)")
    parser.add_argument("--out", required=True, help="directory to write (absent or empty)")
    cfg = parser.parse_args(args)
    output_path(cfg.out, directory=True)
    model, tokenizer_json = load_gpt(cfg.ckpt)
    if tokenizer_json is None:
        raise MixalignError(f"{cfg.ckpt}: no tokenizer is stored with this checkpoint, so it cannot be exported whole")
    save_hf_gpt2(model, tokenizer_json, EOT, cfg.out)
    print(f"written: {cfg.out} (transformers.AutoModelForCausalLM.from_pretrained reads it)")
