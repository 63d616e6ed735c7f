"""Per-text log-likelihoods log p(x_i) in nats: the entries of a log-likelihood vector (SPEC section 2).

log p(x) is the sum of next-token log-probabilities over the text's tokens. The first token is
context only, unless a BOS id is prepended, in which case every real token is scored (the BOS
itself never is). Log-softmax runs in float32; sums are accumulated in float64.

Texts longer than the model's context are scored with strided sliding windows: windows of
`context` input tokens advancing by `context // 2`; the first window scores all its targets,
each later one only the targets not scored yet (the last window is shifted left to end at the
text's end, so it is full length too). Every target is scored exactly once, each with at least
`context - context // 2` tokens of left context once the first window is passed.

All windows of all texts are scored together: sorted by length and packed into right-padded
batches under a token budget (length bucketing), then summed back to their texts in float64.
Right padding is invisible to causal attention, so batched scores equal one-at-a-time scores up
to float32 rounding. For a mixalign `GPT` (`score_gpt`), the LM head runs only on positions that
are scored: a window's context-only positions and the padding skip the head's matmul and softmax.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from mixalign.model.checkpoint import gpt_from_checkpoint
from mixalign.model.nanogpt import GPT, IGNORE_INDEX, target_logprobs

LogprobFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
HF_EXTRA_HINT = "pip install 'mixalign[hf]'"


@dataclass
class ScoreResult:
    values: np.ndarray  # float64 (N,): log p(x_i) in nats
    n_windowed: int  # texts that needed more than one window
    n_tokens: int  # scored target tokens, all texts together
    tokens_per_text: np.ndarray | None = None  # int64 (N,): scored targets per text


@dataclass
class Window:
    text: int
    inputs: np.ndarray  # int64 (T,)
    targets: np.ndarray  # int64 (T,), IGNORE_INDEX where this window does not score


def sliding_windows(text_index: int, ids: Sequence[int], context: int) -> list[Window]:
    """Windows covering every next-token target of `ids` exactly once."""
    ids = np.asarray(ids, dtype=np.int64)
    n_targets = len(ids) - 1
    if n_targets <= 0:
        return []
    if n_targets <= context:
        return [Window(text_index, ids[:-1], ids[1:].copy())]
    stride = max(1, context // 2)
    segments = []
    scored = 0  # targets ids[1..scored] are done
    start = 0
    while scored < n_targets:
        start = min(start, n_targets - context)  # last window: full length, ending at the text's end
        inputs = ids[start : start + context]
        targets = ids[start + 1 : start + context + 1].copy()
        # Target j (position j - start - 1 in this window) is new iff j > scored.
        first_new = scored + 1 - (start + 1)
        targets[:first_new] = IGNORE_INDEX
        segments.append(Window(text_index, inputs, targets))
        scored = start + context
        start += stride
    return segments


def default_batch_tokens(device: str | torch.device) -> int:
    """Scoring batch budget: big on GPUs; small on CPUs, where big batches overflow the caches and
    gain nothing, the work being compute-bound already (BENCHMARKS.md, scoring)."""
    return 16384 if torch.device(device).type == "cuda" else 1024


def default_head_rows(device: str | torch.device) -> int:
    """Positions per LM-head chunk when scoring a mixalign `GPT` (`GPT.token_logprobs`'
    rows_per_chunk): a 256 x vocab block of logits stays in a CPU's cache; on a GPU the chunk only
    bounds the float32 logits' memory."""
    return 4096 if torch.device(device).type == "cuda" else 256


def score_token_ids(
    logprob_fn: LogprobFn,
    token_ids: Sequence[Sequence[int]],
    context: int,
    bos_id: int | None = None,
    max_batch_tokens: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> ScoreResult:
    """log p(x_i) in nats for every token sequence (see the module docstring).

    logprob_fn(input_ids LongTensor[B, T], targets LongTensor[B, T]) -> FloatTensor[B, T] gives
    log p(targets[b, t] | input_ids[b, :t+1]) and 0 where targets == -100.
    """
    if isinstance(context, bool) or not isinstance(context, int) or context < 1:
        raise ValueError(f"context must be a positive int, got {context!r}")
    max_batch_tokens = max_batch_tokens or default_batch_tokens(device)
    if max_batch_tokens < 1:
        raise ValueError(f"max_batch_tokens must be positive, got {max_batch_tokens}")
    n = len(token_ids)
    segments: list[Window] = []
    windows = np.zeros(n, dtype=np.int64)
    for i, ids in enumerate(token_ids):
        ids = list(ids)
        if bos_id is not None:
            ids = [bos_id] + ids
        segs = sliding_windows(i, ids, context)
        windows[i] = len(segs)
        segments.extend(segs)

    values = np.zeros(n, dtype=np.float64)
    counts = np.zeros(n, dtype=np.int64)
    # Longest first: the biggest batch runs first, so a too-large budget fails fast.
    order = sorted(range(len(segments)), key=lambda k: -len(segments[k].inputs))
    batches: list[list[int]] = []
    for k in order:
        # A batch is padded to its first (longest) segment; a lone segment may exceed the budget.
        if batches and (len(batches[-1]) + 1) * len(segments[batches[-1][0]].inputs) <= max_batch_tokens:
            batches[-1].append(k)
        else:
            batches.append([k])

    started = time.perf_counter()
    with torch.inference_mode():
        for b, batch in enumerate(batches):
            width = len(segments[batch[0]].inputs)
            inputs = np.zeros((len(batch), width), dtype=np.int64)  # pad id 0: never attended to
            targets = np.full((len(batch), width), IGNORE_INDEX, dtype=np.int64)
            for row, k in enumerate(batch):
                seg = segments[k]
                inputs[row, : len(seg.inputs)] = seg.inputs
                targets[row, : len(seg.targets)] = seg.targets
            inp = torch.from_numpy(inputs).to(device)
            tgt = torch.from_numpy(targets).to(device)
            lp = logprob_fn(inp, tgt)
            if lp.shape != tgt.shape:
                raise ValueError(f"logprob_fn returned shape {tuple(lp.shape)} for inputs of shape {tuple(tgt.shape)}")
            lp = lp.masked_fill(tgt == IGNORE_INDEX, 0.0)
            sums = lp.to(torch.float64).sum(dim=1).cpu().numpy()
            rows = np.array([segments[k].text for k in batch], dtype=np.int64)
            np.add.at(values, rows, sums)
            np.add.at(counts, rows, (targets != IGNORE_INDEX).sum(axis=1))
            if progress:
                print(
                    f"\rscoring: batch {b + 1}/{len(batches)} ({time.perf_counter() - started:.0f} s)",
                    end="" if b + 1 < len(batches) else "\n",
                    file=sys.stderr,
                    flush=True,
                )
    if not np.all(np.isfinite(values)):
        bad = np.flatnonzero(~np.isfinite(values))[:5].tolist()
        raise ValueError(f"non-finite log-likelihoods for texts {bad} (model produced NaN/inf)")
    return ScoreResult(values, int((windows > 1).sum()), int(counts.sum()), counts)


def _gpt_logprob_fn(model: GPT, device) -> LogprobFn:
    return functools.partial(model.token_logprobs, rows_per_chunk=default_head_rows(device))


def score_gpt(model: GPT, token_ids: Sequence[Sequence[int]], max_batch_tokens: int | None = None) -> ScoreResult:
    """`score_token_ids` for a mixalign `GPT`, on its device, with its context and the LM head run
    only on scored positions (`default_head_rows`)."""
    device = next(model.parameters()).device
    return score_token_ids(
        _gpt_logprob_fn(model, device), token_ids, model.config.block_size, max_batch_tokens=max_batch_tokens, device=device
    )


# -- scorers ------------------------------------------------------------------------------------

def _is_tokenizers(tok: Any) -> bool:
    from tokenizers import Tokenizer

    return isinstance(tok, Tokenizer)


def tokenizer_id(tok: Any) -> str:
    """`tokenizer_hash` for a `tokenizers.Tokenizer`; sha256 of the sorted vocabulary for an HF tokenizer."""
    if _is_tokenizers(tok):
        from mixalign.data.tokenizer import tokenizer_hash

        return tokenizer_hash(tok)
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: (kv[1], kv[0]))
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()


def _tokenizer_vocab_size(tok: Any) -> int:
    if _is_tokenizers(tok):
        return tok.get_vocab_size(with_added_tokens=True)
    return len(tok)


@dataclass
class Scorer:
    """A model and its tokenizer, ready to score text sets."""

    logprob_fn: LogprobFn
    tokenizer: Any  # tokenizers.Tokenizer or a Hugging Face (PreTrained)Tokenizer
    context: int
    bos_id: int | None
    description: str
    tokenizer_id: str
    device: str | torch.device = "cpu"

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens (a BOS is added by scoring, if any)."""
        texts = list(texts)
        if not texts:
            return []
        if _is_tokenizers(self.tokenizer):
            return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]

    def score(self, textset, max_batch_tokens: int | None = None, progress: bool = False) -> ScoreResult:
        """Score a `TextSet` (or a plain sequence of strings)."""
        texts = textset.texts if hasattr(textset, "texts") else list(textset)
        return score_token_ids(
            self.logprob_fn,
            self.encode_batch(texts),
            self.context,
            bos_id=self.bos_id,
            max_batch_tokens=max_batch_tokens,
            device=self.device,
            progress=progress,
        )


def scorer_from_gpt(model: GPT, tokenizer, description: str) -> Scorer:
    """A scorer for a mixalign `GPT` (no BOS; context = block_size; on the model's device)."""
    vocab = _tokenizer_vocab_size(tokenizer)
    if vocab > model.config.vocab_size:
        raise ValueError(
            f"{description}: the tokenizer's vocabulary ({vocab}) is larger than the model's vocab_size "
            f"({model.config.vocab_size})"
        )
    device = next(model.parameters()).device
    return Scorer(
        logprob_fn=_gpt_logprob_fn(model, device),
        tokenizer=tokenizer,
        context=model.config.block_size,
        bos_id=None,
        description=description,
        tokenizer_id=tokenizer_id(tokenizer),
        device=device,
    )


def load_scorer(spec: str | os.PathLike, device: str | torch.device = "cpu") -> Scorer:
    """A scorer from a mixalign Lightning checkpoint (.ckpt) or a local Hugging Face model directory."""
    path = Path(os.fspath(spec)).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return _load_hf(path, device)
        raise ValueError(
            f"{path}: a directory without config.json is not a Hugging Face model; "
            f"give a mixalign .ckpt checkpoint or a local Hugging Face causal-LM directory"
        )
    if path.is_file():
        return _load_checkpoint(path, device)
    raise ValueError(
        f"model {os.fspath(spec)!r}: no such file or directory; give a mixalign Lightning checkpoint "
        f"(.ckpt file) or a local Hugging Face causal-LM directory (with config.json)"
    )


def _load_checkpoint(path: Path, device) -> Scorer:
    model, ckpt = gpt_from_checkpoint(path)
    stored = ckpt.get("mixalign")
    tok_json = stored.get("tokenizer_json") if isinstance(stored, dict) else None
    if not isinstance(tok_json, str):
        raise ValueError(
            f"{path}: no tokenizer stored in the checkpoint (expected checkpoint['mixalign']['tokenizer_json'])"
        )
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_str(tok_json)
    except Exception as exc:
        raise ValueError(f"{path}: the stored tokenizer is not valid tokenizers JSON: {exc}") from None
    model.eval().to(device)
    description = str(path)
    if "global_step" in ckpt:
        description += f" (step {ckpt['global_step']})"
    return scorer_from_gpt(model, tokenizer, description)


def _hf_adds_bos(tokenizer) -> int | None:
    """The BOS id if the HF tokenizer prepends one by itself, else None."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    probe = "Hello world"
    with_special = tokenizer(probe, add_special_tokens=True)["input_ids"]
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    return bos if list(with_special) == [bos] + list(plain) else None


def _load_hf(path: Path, device) -> Scorer:
    try:
        import transformers
    except ImportError:
        raise ImportError(
            f"{path} is a Hugging Face model directory, which needs the optional 'transformers' "
            f"package: {HF_EXTRA_HINT}"
        ) from None
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot load a Hugging Face causal LM and tokenizer from it: {exc}") from None
    if torch.device(device).type == "cpu":
        model = model.float()  # half precision on CPU is slow and lossy; float32 loses nothing
    model.eval().to(device)
    cfg = model.config
    context = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    if not isinstance(context, int) or context < 1:
        raise ValueError(f"{path}: config.json has no max_position_embeddings / n_positions; context length unknown")
    vocab = getattr(cfg, "vocab_size", None)
    if isinstance(vocab, int) and len(tokenizer) > vocab:
        raise ValueError(f"{path}: the tokenizer's vocabulary ({len(tokenizer)}) is larger than the model's ({vocab})")

    def logprob_fn(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return target_logprobs(model(input_ids=inputs, use_cache=False).logits, targets)

    return Scorer(
        logprob_fn=logprob_fn,
        tokenizer=tokenizer,
        context=context,
        bos_id=_hf_adds_bos(tokenizer),
        description=str(path),
        tokenizer_id=tokenizer_id(tokenizer),
        device=device,
    )


def model_vector(spec: str, textset, cache_dir: str | os.PathLike, max_batch_tokens: int | None = None, device="cpu"):
    """The log-likelihood vector of a model spec on `textset`, scored once and then cached.

    `spec` is a checkpoint, a Hugging Face directory, or a saved vector (which must be on this
    text set). The cache key is the model's path and modification time plus the text-set hash.
    """
    from mixalign.llvec.vectors import load_vector, save_vector, subset_vector, vector_from_scores

    if str(spec).endswith(".npz"):
        vector = load_vector(spec)
        if vector.textset_hash == textset.meta.get("subset_of"):  # a vector of the full set serves its subsets
            vector = subset_vector(vector, textset)
        if vector.textset_hash != textset.hash:
            raise ValueError(
                f"vector {spec} was scored on text set {vector.textset_hash[:12]}, "
                f"but this run uses text set {textset.hash[:12]} ({len(textset)} texts)"
            )
        return vector
    path = Path(spec)
    if not path.exists():
        raise ValueError(f"model {str(spec)!r} does not exist")
    stamp = f"{path.resolve()}|{path.stat().st_mtime_ns}|{textset.hash}"
    cached = Path(cache_dir) / f"vector-{hashlib.sha256(stamp.encode()).hexdigest()[:16]}.npz"
    if cached.exists():
        return load_vector(cached)
    scorer = load_scorer(spec, device=device)
    vector = vector_from_scores(scorer.score(textset, max_batch_tokens=max_batch_tokens), textset, scorer.description)
    save_vector(vector, cached)
    return vector
