"""Models to measure: a mixalign checkpoint or a local Hugging Face directory, behind one interface.

A `LanguageModel` holds a network and its tokenizer and offers the three things the measures
need: target log-probabilities (log-likelihood vectors), full next-token distributions at chosen
positions (exact token-level KL), and incremental decoding (Monte Carlo KL, sampling).
`model_vector` scores a model on a text set once and caches the vector.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from mixalign.data.tokenizer import vocabulary_id as tokenizer_id
from mixalign.errors import MixalignError, first_line
from mixalign.llvec.scoring import (
    LogprobFn,
    ScoreResult,
    default_head_rows,
    gpt_logprob_fn,
    score_from_sums,
    score_gpt,
    score_token_ids,
)
from mixalign.llvec.token_kl import TokenKL, exact_token_kl
from mixalign.model.checkpoint import gpt_from_checkpoint
from mixalign.model.nanogpt import GPT, KVCache, target_logprobs

HF_EXTRA_HINT = "pip install 'mixalign[hf]'"
DistributionFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (inputs, keep) -> (n_kept, V) log-probs
StepFn = Callable[[torch.Tensor], torch.Tensor]  # new ids (B, t) -> next-token log-probs (B, V) after them


@dataclass
class LanguageModel:
    """A model and its tokenizer, ready to score texts, compare distributions and sample."""

    description: str
    tokenizer: Any  # tokenizers.Tokenizer or a Hugging Face (PreTrained)Tokenizer
    context: int  # positions one forward pass can see
    bos_id: int | None  # prepended to every text by the tokenizer itself (then every real token is scored)
    doc_start_id: int | None  # what a document follows in training: the first input when sampling
    eos_id: int | None  # what ends a document
    vocab_size: int  # the tokenizer's vocabulary: a model's head may be padded beyond it
    tokenizer_id: str
    device: torch.device
    logprob_fn: LogprobFn  # (inputs, targets) -> (B, T) log p(target)
    distribution_fn: DistributionFn
    decoder: Callable[[], StepFn]  # a fresh incremental decoder (its own key/value cache)
    repeat_cost: float = 1.0  # a repeated read of the same text, in full forward passes (memoized: the head only)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens (a BOS is added by scoring, if any)."""
        texts = list(texts)
        if not texts:
            return []
        if _is_tokenizers(self.tokenizer):
            return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]

    def decode(self, ids: Sequence[int]) -> str:
        if _is_tokenizers(self.tokenizer):
            return self.tokenizer.decode(list(ids), skip_special_tokens=False)
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def score(self, textset, max_batch_tokens: int | None = None, progress: str | None = None) -> ScoreResult:
        """Score a `TextSet` (or a plain sequence of strings)."""
        texts = textset.texts if hasattr(textset, "texts") else list(textset)
        return score_token_ids(
            self.logprob_fn, self.encode_batch(texts), self.context, bos_id=self.bos_id,
            max_batch_tokens=max_batch_tokens, device=self.device, progress=progress,
        )


def score_and_exact_kl(model: GPT, target: LanguageModel | None, token_ids: Sequence[Sequence[int]],
                       max_batch_tokens: int | None = None) -> tuple[ScoreResult, TokenKL | None]:
    """The model's log-likelihoods of the texts and, with a target sharing its tokenizer, the exact
    KL both ways (a_to_b: model -> target). The KL pass gives the log-likelihoods too when it saw each
    text as scoring would (the target's context at least the model's): then one pass, not two."""
    if target is None:
        return score_gpt(model, token_ids, max_batch_tokens), None
    context = model.config.block_size
    kl = exact_token_kl(model.next_token_logprobs, target.distribution_fn, token_ids, min(context, target.context),
                        target.vocab_size, max_batch_tokens=max_batch_tokens, device=next(model.parameters()).device)
    if target.context >= context:
        return score_from_sums(kl.a_logp, kl.positions, context), kl
    return score_gpt(model, token_ids, max_batch_tokens), kl


def shares_tokenizer(a: LanguageModel, b: LanguageModel) -> bool:
    """Same token ids for the same text: the condition for comparing next-token distributions."""
    return a.tokenizer_id == b.tokenizer_id


def exact_kl_between(a: LanguageModel, b: LanguageModel, textset, max_batch_tokens: int | None = None,
                     progress: str | None = None) -> TokenKL:
    """Exact token-level KL between two models on a text set, both ways, per text (nats)."""
    if not shares_tokenizer(a, b):
        raise MixalignError(f"exact KL needs one tokenizer: {a.description} and {b.description} have different "
                            "vocabularies (use the Monte Carlo KL instead)")
    return exact_token_kl(a.distribution_fn, b.distribution_fn, a.encode_batch(textset.texts), min(a.context, b.context),
                          a.vocab_size, bos_id=a.bos_id, max_batch_tokens=max_batch_tokens, device=a.device,
                          progress=progress)


# -- mixalign GPTs ------------------------------------------------------------------------------

def _is_tokenizers(tok: Any) -> bool:
    from tokenizers import Tokenizer

    return isinstance(tok, Tokenizer)


def _vocab_size(tokenizer: Any) -> int:
    return tokenizer.get_vocab_size(with_added_tokens=True) if _is_tokenizers(tokenizer) else len(tokenizer)


MEMO_BYTES = 2**30  # at most this much of a memoized model's hidden states is kept


def _memoized_distribution(model: GPT, rows: int) -> DistributionFn:
    """`GPT.next_token_logprobs` for a model that sees the same batches again and again (a fixed
    target, measured against every probe and at every validation): the transformer's output at the
    kept positions is kept per batch, so a repeat costs only the LM head. Exactly the same numbers."""
    store: dict[bytes, torch.Tensor] = {}
    kept_bytes = 0

    def distribution(inputs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        nonlocal kept_bytes
        key = hashlib.blake2b(inputs.cpu().numpy().tobytes() + keep.cpu().numpy().tobytes()).digest()
        hidden = store.get(key)
        if hidden is None:
            hidden = model.hidden_states(inputs)[keep]
            if kept_bytes + hidden.numel() * hidden.element_size() <= MEMO_BYTES:
                store[key] = hidden
                kept_bytes += hidden.numel() * hidden.element_size()
        chunks = [F.log_softmax(model.lm_head(hidden[s : s + rows]).float(), dim=-1) for s in range(0, len(hidden), rows)]
        return torch.cat(chunks) if chunks else hidden.new_zeros((0, model.config.vocab_size), dtype=torch.float32)

    return distribution


def model_from_gpt(model: GPT, tokenizer, description: str, memoize: bool = False) -> LanguageModel:
    """A mixalign `GPT` (no BOS; documents follow <|endoftext|>; context = block_size; on its device).

    memoize: the model is fixed (a target), so its distributions on repeated batches are kept.
    """
    from mixalign.data.tokenizer import eot_id

    vocab = _vocab_size(tokenizer)
    if vocab > model.config.vocab_size:
        raise MixalignError(
            f"{description}: the tokenizer's vocabulary ({vocab}) is larger than the model's vocab_size "
            f"({model.config.vocab_size})"
        )
    device = next(model.parameters()).device
    eot = eot_id(tokenizer)
    rows = default_head_rows(device)

    def decoder() -> StepFn:
        cache = KVCache(model.config.n_layer)
        return lambda ids: model.decode_step(ids, cache)

    config = model.config
    head_share = config.vocab_size / (12 * config.n_layer * config.n_embd + config.vocab_size)  # FLOPs per token
    return LanguageModel(
        description=description, tokenizer=tokenizer, context=model.config.block_size, bos_id=None,
        doc_start_id=eot, eos_id=eot, vocab_size=vocab, tokenizer_id=tokenizer_id(tokenizer), device=device,
        logprob_fn=gpt_logprob_fn(model),
        distribution_fn=(_memoized_distribution(model, rows) if memoize
                         else lambda inputs, keep: model.next_token_logprobs(inputs, keep, rows)),
        decoder=decoder, repeat_cost=head_share if memoize else 1.0,
    )


def load_model(spec: str | os.PathLike, device: str | torch.device = "cpu", memoize: bool = False) -> LanguageModel:
    """A mixalign Lightning checkpoint (.ckpt) or a local Hugging Face model directory, in eval mode.

    memoize: keep a mixalign model's distributions on batches it sees again (see `model_from_gpt`).
    """
    path = Path(os.fspath(spec)).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return _load_hf(path, device)
        raise MixalignError(
            f"{path}: a directory without config.json is not a Hugging Face model; "
            f"give a mixalign .ckpt checkpoint or a local Hugging Face causal-LM directory"
        )
    if path.is_file():
        return _load_checkpoint(path, device, memoize)
    raise MixalignError(
        f"model {os.fspath(spec)!r}: no such file or directory; give a mixalign Lightning checkpoint "
        f"(.ckpt file) or a local Hugging Face causal-LM directory (with config.json)"
    )


def _load_checkpoint(path: Path, device, memoize: bool = False) -> LanguageModel:
    model, ckpt = gpt_from_checkpoint(path)
    stored = ckpt.get("mixalign")
    tok_json = stored.get("tokenizer_json") if isinstance(stored, dict) else None
    if not isinstance(tok_json, str):
        raise MixalignError(
            f"{path}: no tokenizer stored in the checkpoint (expected checkpoint['mixalign']['tokenizer_json'])"
        )
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_str(tok_json)
    except Exception as exc:
        raise MixalignError(f"{path}: the stored tokenizer is not valid tokenizers JSON: {exc}") from None
    model.eval().to(device)
    description = str(path)
    if "global_step" in ckpt:
        description += f" (step {ckpt['global_step']})"
    return model_from_gpt(model, tokenizer, description, memoize)


# -- Hugging Face -------------------------------------------------------------------------------

def _hf_adds_bos(tokenizer) -> int | None:
    """The BOS id if the HF tokenizer prepends one by itself, else None."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    probe = "Hello world"
    with_special = tokenizer(probe, add_special_tokens=True)["input_ids"]
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    return bos if list(with_special) == [bos] + list(plain) else None


REMOTE_CODE_FILES = ("config.json", "tokenizer_config.json", "generation_config.json")


def refuse_remote_code(path: Path) -> None:
    """A directory that asks to run its own Python (an `auto_map` entry) is refused before
    transformers sees it: no file a user names ever runs code, whatever is on standard input."""
    for name in REMOTE_CODE_FILES:
        file = path / name
        try:
            settings = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MixalignError(f"{file}: not readable JSON ({exc})") from None
        if isinstance(settings, dict) and "auto_map" in settings:
            raise MixalignError(f"{file}: 'auto_map' asks to run the directory's own Python code; mixalign never "
                                "runs code from a model directory (convert it to a built-in transformers class)")


def _load_hf_parts(path: Path, device):
    try:
        import transformers
    except ImportError:
        raise MixalignError(
            f"{path} is a Hugging Face model directory, which needs the optional 'transformers' "
            f"package: {HF_EXTRA_HINT}"
        ) from None
    refuse_remote_code(path)
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True,
                                                                  trust_remote_code=False)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True,
                                                               trust_remote_code=False)
    except Exception as exc:
        if "Weights only load failed" in str(exc):  # transformers loads pytorch_model.bin with weights_only
            raise MixalignError(f"{path}: refused: its pytorch_model.bin holds objects other than tensors and plain "
                                f"values, and loading it could run code ({first_line(exc)})") from None
        raise MixalignError(f"{path}: cannot load a Hugging Face causal LM and tokenizer from it: {first_line(exc)}") from None
    if torch.device(device).type == "cpu":
        model = model.float()  # half precision on CPU is slow and lossy; float32 loses nothing
    return model.eval().to(device), tokenizer


def _load_hf(path: Path, device) -> LanguageModel:
    model, tokenizer = _load_hf_parts(path, device)
    cfg = model.config
    context = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    if not isinstance(context, int) or context < 1:
        raise MixalignError(f"{path}: config.json has no max_position_embeddings / n_positions; context length unknown")
    vocab = getattr(cfg, "vocab_size", None)
    if isinstance(vocab, int) and len(tokenizer) > vocab:
        raise MixalignError(f"{path}: the tokenizer's vocabulary ({len(tokenizer)}) is larger than the model's ({vocab})")

    def logprob_fn(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return target_logprobs(model(input_ids=inputs, use_cache=False).logits, targets)

    def distribution_fn(inputs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(model(input_ids=inputs, use_cache=False).logits[keep].float(), dim=-1)

    def decoder() -> StepFn:
        past = None

        def step(ids: torch.Tensor) -> torch.Tensor:
            nonlocal past
            out = model(input_ids=ids, past_key_values=past, use_cache=True)
            past = out.past_key_values
            return F.log_softmax(out.logits[:, -1].float(), dim=-1)

        return step

    bos = _hf_adds_bos(tokenizer)
    return LanguageModel(
        description=str(path), tokenizer=tokenizer, context=context, bos_id=bos,
        doc_start_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id,
        eos_id=tokenizer.eos_token_id, vocab_size=_vocab_size(tokenizer), tokenizer_id=tokenizer_id(tokenizer),
        device=next(model.parameters()).device,
        logprob_fn=logprob_fn, distribution_fn=distribution_fn, decoder=decoder,
    )


@functools.lru_cache(maxsize=4)
def shared_model(spec: str, device: str = "cpu") -> LanguageModel:
    """One loaded, memoized model per (spec, device) in this process: a fixed target that many probes
    are measured against (see `model_from_gpt`'s memoize)."""
    return load_model(spec, device=device, memoize=True)


# -- cached vectors -----------------------------------------------------------------------------

def model_vector(spec: str, textset, cache_dir: str | os.PathLike, max_batch_tokens: int | None = None, device="cpu"):
    """The log-likelihood vector of a model spec on `textset`, scored once and then cached.

    `spec` is a checkpoint, a Hugging Face directory, or a saved vector (which must be on this
    text set). The cache key is the model's path and modification time plus the text-set hash.
    """
    from mixalign.llvec.vectors import (
        load_vector,
        save_vector,
        subset_vector,
        vector_from_scores,
    )

    if str(spec).endswith(".npz"):
        vector = load_vector(spec)
        if vector.textset_hash == textset.meta.get("subset_of"):  # a vector of the full set serves its subsets
            if len(vector) != textset.meta.get("subset_of_n", len(vector)):
                raise MixalignError(f"vector {spec}: {len(vector)} values, but its text set {vector.textset_hash[:12]} "
                                    f"has {textset.meta['subset_of_n']} texts")
            vector = subset_vector(vector, textset)
        if vector.textset_hash != textset.hash:
            raise MixalignError(
                f"vector {spec} was scored on text set {vector.textset_hash[:12]}, "
                f"but this run uses text set {textset.hash[:12]} ({len(textset)} texts)"
            )
        if len(vector) != len(textset):
            raise MixalignError(f"vector {spec}: {len(vector)} values for the {len(textset)} texts of its text set "
                                f"{textset.hash[:12]}")
        return vector
    path = Path(spec)
    if not path.exists():
        raise MixalignError(f"model {str(spec)!r} does not exist")
    stamp = f"{path.resolve()}|{path.stat().st_mtime_ns}|{textset.hash}"
    cached = Path(cache_dir) / f"vector-{hashlib.sha256(stamp.encode()).hexdigest()[:16]}.npz"
    if cached.exists():
        return load_vector(cached)
    model = load_model(spec, device=device)
    result = model.score(textset, max_batch_tokens=max_batch_tokens, progress=f"scoring {path.name}")
    vector = vector_from_scores(result, textset, model.description)
    save_vector(vector, cached)
    return vector
