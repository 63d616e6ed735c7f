"""GPT-2 weights from a local Hugging Face directory, as a mixalign `GPT` (`model.init_from`, `model.teacher`),
and back (`mixalign export`).

Users who continue pretraining GPT-2 start from its published weights. Hugging Face's GPT-2 is
the same network as `GPT` (pre-LayerNorm blocks, tanh GELU, tied embeddings, biases), stored
under other names and with its linear layers as `Conv1D` (weights transposed). This module reads
`config.json` and the weights file (`model.safetensors`, or `pytorch_model.bin` with
`weights_only=True`) directly: nothing in the directory is executed, and transformers is not needed.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import torch
from tokenizers import Tokenizer

from mixalign.errors import MixalignError, first_line
from mixalign.io import read_torch_file
from mixalign.model.nanogpt import GPT, GPTConfig, state_shapes

GELUS = ("gelu_new", "gelu_pytorch_tanh")  # the tanh approximation `GPT` uses
CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # stored (in, out): transposed here
OURS = {"ln_1": "ln_1", "attn.c_attn": "attn.qkv", "attn.c_proj": "attn.proj", "ln_2": "ln_2",
        "mlp.c_fc": "mlp.fc", "mlp.c_proj": "mlp.proj"}


def is_hf_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def hf_gpt2_config(path: Path) -> GPTConfig:
    """The `GPTConfig` of a Hugging Face GPT-2 `config.json`, or a clear error for anything else."""
    try:
        hf = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MixalignError(f"{path / 'config.json'}: cannot read it as JSON: {exc}") from None
    if hf.get("model_type") != "gpt2":
        raise MixalignError(f"{path}: model_type {hf.get('model_type')!r}; init_from and teacher read GPT-2 "
                            "directories only (other Hugging Face models work as targets)")
    if hf.get("activation_function", "gelu_new") not in GELUS:
        raise MixalignError(f"{path}: activation_function {hf['activation_function']!r}; GPT uses the tanh GELU {GELUS}")
    if hf.get("layer_norm_epsilon", 1e-5) != 1e-5 or hf.get("scale_attn_by_inverse_layer_idx") or hf.get("reorder_and_upcast_attn"):
        raise MixalignError(f"{path}: a GPT-2 variant (layer_norm_epsilon, scale_attn_by_inverse_layer_idx or "
                            "reorder_and_upcast_attn differ from GPT-2's) that GPT does not implement")
    try:
        return GPTConfig(n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"],
                         block_size=hf["n_positions"], vocab_size=hf["vocab_size"], bias=True, dropout=0.0)
    except KeyError as exc:
        raise MixalignError(f"{path / 'config.json'}: no {exc.args[0]!r}") from None


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The directory's weights as tensors; a pickled object in pytorch_model.bin is never unpickled."""
    file = path / "model.safetensors"
    if file.is_file():
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise MixalignError(f"{path}: reading model.safetensors needs the 'safetensors' package "
                                "(pip install 'mixalign[hf]')") from None
        try:
            state = load_file(str(file))
        except Exception as exc:  # safetensors' errors share no public base class
            raise MixalignError(f"{file}: cannot read the weights (truncated or corrupt safetensors file): "
                                f"{first_line(exc)}") from None
    elif (file := path / "pytorch_model.bin").is_file():
        state = read_torch_file(file, "weights file")
    else:
        raise MixalignError(f"{path}: no model.safetensors or pytorch_model.bin (sharded weights are not supported)")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MixalignError(f"{file}: not a state dict of tensors")
    return state


def our_state_dict(hf_state: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """Hugging Face GPT-2 parameter names and layouts -> `GPT.state_dict()`'s (the tied head is wte)."""
    hf_state = {k.removeprefix("transformer."): v for k, v in hf_state.items()}
    state = {"wte.weight": hf_state["wte.weight"], "wpe.weight": hf_state["wpe.weight"],
             "ln_f.weight": hf_state["ln_f.weight"], "ln_f.bias": hf_state["ln_f.bias"]}
    for i in range(config.n_layer):
        for theirs, ours in OURS.items():
            for kind in ("weight", "bias"):
                value = hf_state[f"h.{i}.{theirs}.{kind}"]
                state[f"blocks.{i}.{ours}.{kind}"] = value.t() if kind == "weight" and theirs in CONV1D else value
    state["lm_head.weight"] = state["wte.weight"]
    return {k: v.float().contiguous() for k, v in state.items()}


def gpt_from_hf(path: str | Path) -> GPT:
    """The GPT-2 in a local Hugging Face directory, as a `GPT` in eval mode on the CPU."""
    path = Path(path)
    config = hf_gpt2_config(path)
    try:
        state = our_state_dict(_read_weights(path), config)
    except KeyError as exc:
        raise MixalignError(f"{path}: the weights lack {exc.args[0]!r}: not a GPT-2 of its config.json") from None
    except RuntimeError as exc:  # a weight of more than two dimensions cannot be transposed
        raise MixalignError(f"{path}: the weights do not fit its config.json: {str(exc).splitlines()[0]}") from None
    for key, shape in state_shapes(config).items():  # before a model of config.json's size is allocated
        if tuple(state[key].shape) != shape:
            raise MixalignError(f"{path}: the weights do not fit its config.json: {key!r} is "
                                f"{tuple(state[key].shape)}, config.json makes it {shape}")
    model = GPT(config)
    model.load_state_dict(state)
    return model.eval()


def hf_tokenizer_json(path: str | Path) -> str | None:
    """The directory's fast tokenizer (tokenizer.json), if it has one."""
    file = Path(path) / "tokenizer.json"
    return file.read_text(encoding="utf-8") if file.is_file() else None


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """`GPT.state_dict()` -> Hugging Face GPT2LMHeadModel names and layouts (the inverse of
    `our_state_dict`). The tied head is left out, as transformers saves it: `tie_word_embeddings`
    re-ties it on load."""
    ours = model.state_dict()
    state = {f"transformer.{k}": ours[k] for k in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias")}
    for i in range(model.config.n_layer):
        for theirs, name in OURS.items():
            for kind in ("weight", "bias"):
                value = ours[f"blocks.{i}.{name}.{kind}"]
                state[f"transformer.h.{i}.{theirs}.{kind}"] = value.t() if kind == "weight" and theirs in CONV1D else value
    return {k: v.detach().float().contiguous().clone() for k, v in state.items()}


def hf_gpt2_config_json(config: GPTConfig, eot: int | None) -> dict:
    """The `config.json` of a GPT2LMHeadModel that computes what `GPT(config)` computes."""
    if not config.bias:
        raise MixalignError("a GPT without biases (model.bias: false) has no Hugging Face GPT-2 equivalent")
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": config.vocab_size,
            "n_positions": config.block_size, "n_ctx": config.block_size, "n_embd": config.n_embd,
            "n_layer": config.n_layer, "n_head": config.n_head, "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
            "tie_word_embeddings": True, "bos_token_id": eot, "eos_token_id": eot, "torch_dtype": "float32"}


def save_hf_gpt2(model: GPT, tokenizer_json: str, eot_token: str, out: str | Path) -> Path:
    """`model` and its tokenizer as a Hugging Face GPT-2 directory (config.json, model.safetensors,
    tokenizer.json, tokenizer_config.json) that transformers, lm-eval and vLLM load. Written into a
    temporary sibling and renamed, so `out` is whole or absent; an existing non-empty `out` is refused."""
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise MixalignError("writing model.safetensors needs the 'safetensors' package (pip install 'mixalign[hf]')") from None
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MixalignError(f"{out}: already exists; give another --out or remove it")
    eot = Tokenizer.from_str(tokenizer_json).token_to_id(eot_token)
    if eot is None:
        raise MixalignError(f"the model's tokenizer has no {eot_token!r} token to mark the end of a text")
    files = {
        "config.json": json.dumps(hf_gpt2_config_json(model.config, eot), indent=2),
        "tokenizer.json": tokenizer_json,
        "tokenizer_config.json": json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eot_token,
                                             "bos_token": eot_token, "unk_token": eot_token,
                                             "model_max_length": model.config.block_size}, indent=2),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial"
    staging.mkdir()  # the umask's mode, as `out` would get
    try:
        for name, text in files.items():
            (staging / name).write_text(text, encoding="utf-8")
        save_file(hf_state_dict(model), str(staging / "model.safetensors"), metadata={"format": "pt"})
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
