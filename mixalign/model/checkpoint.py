"""Rebuild a `GPT` from a mixalign Lightning checkpoint (or a Hugging Face GPT-2 directory), with a clear
error for every way that fails."""

from __future__ import annotations

from pathlib import Path

import torch

from mixalign.errors import MixalignError
from mixalign.io import atomic_path, read_torch_file
from mixalign.model.hf_gpt2 import gpt_from_hf, hf_tokenizer_json, is_hf_dir
from mixalign.model.nanogpt import GPT, GPTConfig, state_shapes

GPT_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "bias", "dropout")


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """A checkpoint's dict, loaded with `weights_only=True`: a file a user names never runs code.

    mmap: map the tensors instead of reading them (a check that reads only the hyper-parameters).
    """
    path = Path(path)
    if not path.is_file():
        raise MixalignError(f"checkpoint {str(path)!r} does not exist")
    checkpoint = read_torch_file(path, "checkpoint", mmap=mmap)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise MixalignError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    return checkpoint


def check_architecture(path, config: GPTConfig, expect: GPTConfig) -> None:
    """Continued pretraining needs exactly the configured architecture (dropout aside)."""
    different = {f: (getattr(config, f), getattr(expect, f)) for f in GPT_FIELDS
                 if f != "dropout" and getattr(config, f) != getattr(expect, f)}
    if different:
        pairs = ", ".join(f"{f}: checkpoint {a} vs config {b}" for f, (a, b) in different.items())
        raise MixalignError(f"{path}: checkpoint is of another architecture ({pairs})")


def load_gpt(path: str | Path, expect: GPTConfig | None = None) -> tuple[GPT, str | None]:
    """A `GPT` from a mixalign checkpoint or a local Hugging Face GPT-2 directory, and the tokenizer
    JSON stored with it (None when there is none): what `init_from` and `teacher` accept."""
    if is_hf_dir(path):
        model = gpt_from_hf(path)
        if expect is not None:
            check_architecture(path, model.config, expect)
        return model, hf_tokenizer_json(path)
    model, checkpoint = gpt_from_checkpoint(path, expect)
    return model, checkpoint.get("mixalign", {}).get("tokenizer_json")


def gpt_from_checkpoint(path: str | Path, expect: GPTConfig | None = None) -> tuple[GPT, dict]:
    """The checkpoint's model (eval mode, CPU) and the raw checkpoint dict.

    With `expect`, the checkpoint must hold exactly that architecture (continued pretraining).
    """
    checkpoint = read_checkpoint(path)
    hp = checkpoint.get("hyper_parameters")
    if not isinstance(hp, dict) or any(f not in hp for f in GPT_FIELDS):
        raise MixalignError(f"{path}: checkpoint hyper-parameters lack {list(GPT_FIELDS)}; not a mixalign model checkpoint")
    try:
        config = GPTConfig(**{f: hp[f] for f in GPT_FIELDS})
    except (TypeError, ValueError) as exc:
        raise MixalignError(f"{path}: invalid model hyper-parameters: {exc}") from None
    if expect is not None:
        check_architecture(path, config, expect)
    state = {k[len("model."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    expected = state_shapes(config)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise MixalignError(
            f"{path}: state dict is of another architecture: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
        )
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise MixalignError(
                f"{path}: state dict is of another architecture: 'model.{key}' has shape {tuple(state[key].shape)} "
                f"in the checkpoint but {shape} in the model built from its hyper-parameters"
            )
    model = GPT(config)
    model.load_state_dict(state)
    return model.eval(), checkpoint


KEEP_KEYS = ("state_dict", "hyper_parameters", "datamodule_hyper_parameters", "global_step", "mixalign",
             "pytorch-lightning_version")


def export_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """A slim copy for inference, scoring and `init_from`: weights, hyper-parameters, tokenizer.

    Optimizer state, loop progress and callbacks are dropped (they roughly triple the size and
    matter only to resume the very run that wrote them); the copy is written atomically.
    """
    checkpoint = read_checkpoint(src)
    slim = {key: checkpoint[key] for key in KEEP_KEYS if key in checkpoint}
    slim["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    if "mixalign" in slim:
        slim["mixalign"] = {k: v for k, v in slim["mixalign"].items() if k != "domain_token_counts"}
    with atomic_path(dst) as tmp:
        torch.save(slim, tmp)
    return Path(dst)
