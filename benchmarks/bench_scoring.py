"""Scoring throughput: batched, length-bucketed `score_token_ids` vs one text at a time.

Batched is the product's path: `score_token_ids` with the default token budget (16384), all
windows sorted by length and packed into right-padded batches. One-at-a-time is the reference
protocol: every segment alone, no padding (`max_batch_tokens=1`, so each batch holds exactly one
segment; texts longer than the context are still cut into the same sliding windows). Both score the
same token ids with the same model, so the vectors must agree up to float32 rounding.

Model: a randomly initialised `GPT` (seed 1337) of the demo width (4 layers, 4 heads, 128 wide)
with block_size 256 and the demo-4k vocabulary; text set: an evenly spaced subset of the shipped
demo text set, tokenized with demo-4k. Timings are interleaved (B, S, B, S, ...); medians count.

    python benchmarks/bench_scoring.py            # 300 texts, 3 repeats of each
    python benchmarks/bench_scoring.py --quick    # 60 texts, 1 repeat
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _common import SEED, median, peak_rss_mib, table, write_result  # noqa: E402
from mixalign.data.tokenizer import load_tokenizer  # noqa: E402
from mixalign.llvec.scoring import score_token_ids  # noqa: E402
from mixalign.llvec.textset import load_textset, subset_textset  # noqa: E402
from mixalign.model.nanogpt import GPT, GPTConfig  # noqa: E402

DEFAULT_BUDGET = 16384  # score_token_ids' default max_batch_tokens


def logsumexp_logprobs(model: GPT):
    """log p(target) as logit[target] - logsumexp(logits): same values as token_logprobs, but only a
    (B, T) result besides the logits, instead of a second (B, T, vocab) float32 tensor."""

    def fn(idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = model(idx).float()
        ignore = targets == -100
        picked = logits.gather(-1, targets.masked_fill(ignore, 0).unsqueeze(-1)).squeeze(-1)
        return (picked - torch.logsumexp(logits, dim=-1)).masked_fill(ignore, 0.0)

    return fn


def sweep(model: GPT, token_ids, context: int, reference: np.ndarray) -> list[dict]:
    """Seconds per pass for a range of token budgets and both log-prob functions (one pass each, after a warm pass)."""
    rows = []
    for name, fn in (("token_logprobs", model.token_logprobs), ("logsumexp", logsumexp_logprobs(model))):
        for budget in (1, 1024, 2048, 4096, 8192, 16384):
            score_token_ids(fn, token_ids[: max(1, len(token_ids) // 10)], context=context, max_batch_tokens=budget)
            start = time.perf_counter()
            result = score_token_ids(fn, token_ids, context=context, max_batch_tokens=budget)
            seconds = time.perf_counter() - start
            rows.append({"logprob_fn": name, "max_batch_tokens": budget, "seconds": seconds,
                         "texts_per_s": len(token_ids) / seconds, "peak_rss_mib": peak_rss_mib(),
                         "max_abs_diff_nats": float(np.max(np.abs(result.values - reference)))})
            print(f"sweep {name:<15} budget {budget:>6}: {seconds:6.2f} s  {len(token_ids) / seconds:7.1f} texts/s  "
                  f"max|diff| {rows[-1]['max_abs_diff_nats']:.1e}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-texts", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each mode, interleaved")
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: stable on a shared machine; 0 = torch default)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 60 texts, 1 repeat")
    parser.add_argument("--sweep", action="store_true",
                        help="also time a sweep of max_batch_tokens, with the product's token_logprobs and with a "
                             "logsumexp variant that never materialises the (B, T, vocab) log-softmax")
    args = parser.parse_args()
    if args.quick:
        args.n_texts, args.repeats = 60, 1
    if args.threads:
        torch.set_num_threads(args.threads)

    textset = subset_textset(load_textset("demo"), args.n_texts)
    tokenizer = load_tokenizer("demo-4k")
    token_ids = [e.ids for e in tokenizer.encode_batch(list(textset.texts), add_special_tokens=False)]
    lengths = np.array([len(ids) for ids in token_ids])
    torch.manual_seed(SEED)
    model = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=args.block_size, vocab_size=tokenizer.get_vocab_size()))
    model.eval()
    rss_setup = peak_rss_mib()

    def run(budget: int):
        start = time.perf_counter()
        result = score_token_ids(model.token_logprobs, token_ids, context=args.block_size, max_batch_tokens=budget)
        return time.perf_counter() - start, result

    # Untimed pass of each (one-at-a-time first, so ru_maxrss after it is that mode's peak).
    _, single = run(1)
    rss_single = peak_rss_mib()
    _, batched = run(DEFAULT_BUDGET)
    rss_batched = peak_rss_mib()

    times = {"batched": [], "single": []}
    for r in range(args.repeats):
        for mode, budget in (("batched", DEFAULT_BUDGET), ("single", 1)):
            seconds, result = run(budget)
            times[mode].append(seconds)
            print(f"repeat {r} {mode:<8} {seconds:7.2f} s  {len(token_ids) / seconds:8.1f} texts/s", flush=True)

    diff = float(np.max(np.abs(batched.values - single.values)))
    rel = float(np.max(np.abs(batched.values - single.values) / np.maximum(1.0, np.abs(single.values))))
    med = {mode: median(ts) for mode, ts in times.items()}
    tps = {mode: len(token_ids) / s for mode, s in med.items()}
    ratio = tps["batched"] / tps["single"]
    summary = {
        "batched_texts_per_s": tps["batched"],
        "single_texts_per_s": tps["single"],
        "batched_tokens_per_s": batched.n_tokens / med["batched"],
        "ratio_batched_over_single": ratio,
        "max_abs_diff_nats": diff,
        "max_rel_diff": rel,
        "target_ratio": 4.0,
        "target_max_diff_nats": 1e-4,
        "target_met": bool(ratio >= 4.0 and diff <= 1e-4),
        "peak_rss_mib": {"after_setup": rss_setup, "single": rss_single, "batched": rss_batched},
    }
    settings = {
        "n_texts": len(token_ids),
        "tokens_per_text": {"min": int(lengths.min()), "median": float(np.median(lengths)), "max": int(lengths.max()),
                            "total_scored": int(batched.n_tokens)},
        "texts_windowed": batched.n_windowed,
        "model": {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": args.block_size, "vocab_size": 4096, "weights": "random init, seed 1337"},
        "batched_budget_tokens": DEFAULT_BUDGET,
        "single_budget_tokens": 1,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "quick": args.quick,
    }
    if args.sweep:
        summary["sweep"] = sweep(model, token_ids, args.block_size, single.values)
    path = write_result("bench_scoring_quick" if args.quick else "bench_scoring",
                        {"settings": settings, "summary": summary, "seconds": times})

    print()
    print(table(["mode", "median s", "texts/s", "tokens/s", "peak RSS MiB"], [
        ["batched (16384-token budget)", med["batched"], tps["batched"], batched.n_tokens / med["batched"], rss_batched],
        ["one at a time", med["single"], tps["single"], batched.n_tokens / med["single"], rss_single],
    ]))
    print(f"\nratio batched / one-at-a-time = {ratio:.2f}x (target >= 4x: {'met' if ratio >= 4 else 'NOT met'}); "
          f"max |diff| = {diff:.2e} nats (target <= 1e-4: {'met' if diff <= 1e-4 else 'NOT met'})")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
