"""`mixalign sample`: text from a model, reproducible from a seed."""

from __future__ import annotations

import json
from typing import Optional

from mixalign.cli.parsing import _parser, default_device, output_path
from mixalign.errors import MixalignError
from mixalign.io import write_bytes_atomic
from mixalign.llvec.models import load_model
from mixalign.llvec.montecarlo import sample_sequences
from mixalign.units import DEFAULT_SEED


def sample_main(args: list[str]) -> None:
    """Text from a model (mixalign checkpoint or local Hugging Face directory), as nanoGPT's
    sample.py and litgpt generate: --n continuations of --prompt, from a document start. A seed
    fixes every sample, whatever the batch."""
    parser = _parser("sample", sample_main)
    parser.add_argument("--model", required=True, help="mixalign checkpoint (.ckpt) or local Hugging Face model dir")
    parser.add_argument("--prompt", default="", help="text the samples continue (default: none, a fresh document)")
    parser.add_argument("--n", type=int, default=3, help="how many samples")
    parser.add_argument("--max_new_tokens", type=int, default=200, help="at most this many tokens each (and the context)")
    parser.add_argument("--temperature", type=float, default=0.8, help="1.0 samples the model itself; lower is greedier")
    parser.add_argument("--top_k", type=Optional[int], default=200, help="draw from the k likeliest tokens (null: all)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="fixes the samples")
    parser.add_argument("--device", default=default_device(), help="default: cuda where there is a GPU")
    parser.add_argument("--out", type=Optional[str], default=None, help="also write the samples as JSON lines")
    cfg = parser.parse_args(args)
    output_path(cfg.out)
    model = load_model(cfg.model, device=cfg.device)
    start = [] if model.doc_start_id is None else [model.doc_start_id]
    prompt = start + (model.encode_batch([cfg.prompt])[0] if cfg.prompt else [])
    if not prompt:
        raise MixalignError(f"{cfg.model}: its tokenizer has no document-start token; give --prompt")
    room = model.context - len(prompt)
    if room < 1 or cfg.n < 1 or cfg.max_new_tokens < 1:
        raise MixalignError(f"--prompt takes {len(prompt)} of the model's {model.context} positions and --n {cfg.n}, "
                            f"--max_new_tokens {cfg.max_new_tokens}: nothing to sample")
    samples = sample_sequences(model.decoder, prompt, model.eos_id, model.vocab_size, cfg.n,
                               min(cfg.max_new_tokens, room), cfg.seed, batch_size=min(cfg.n, 64),
                               device=model.device, temperature=cfg.temperature, top_k=cfg.top_k)
    texts = [model.decode(prompt[len(start):] + (ids[:-1] if done else ids))
             for ids, done in zip(samples.token_ids, samples.finished)]
    for i, text in enumerate(texts):
        print(f"--- sample {i + 1} of {cfg.n} ---\n{text}")
    if cfg.out:
        lines = [json.dumps({"text": t, "finished": bool(f), "seed": cfg.seed, "index": i})
                 for i, (t, f) in enumerate(zip(texts, samples.finished))]
        write_bytes_atomic(cfg.out, ("\n".join(lines) + "\n").encode())
        print(f"written: {cfg.out}")
