"""Scoring throughput: the product's batched scorer vs one-text-at-a-time scoring, and the CPU's ceiling.

Batched is the product's path, `score_gpt`: all windows of all texts sorted by length and packed into
right-padded batches under the device's token budget, the LM head run only on positions that are
scored, a chunk of rows at a time. One-at-a-time is the reference protocol: every text alone, each of
its sliding windows alone, the full LM head and log-softmax at every position (`GPT.token_logprobs`'
training path). Both score the same windows of the same token ids with the same weights, so their
vectors must agree to float32 rounding.

Model: the shipped demo base (`checkpoints/base.ckpt`: 4 layers, 128 wide, context 128, vocabulary
4096), the model the demo job scores; text set: the shipped demo text set, tokenized with its
tokenizer. Timings are interleaved (reference, batched, reference, ...) at each thread count, both
sides always with the same threads; medians count.

The ceiling: the FLOPs that any scorer of these windows must spend (the blocks at every window
position, the head at every scored one), divided by this CPU's measured matmul throughput, bound
the time from below, so reference time / that bound is the most any batching could buy here.

    python benchmarks/bench_scoring.py            # 1000 texts, 3 repeats, 1 and 2 threads
    python benchmarks/bench_scoring.py --quick    # 100 texts, 1 repeat, 1 thread
    python benchmarks/bench_scoring.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import REPO, measured_on, median, peak_rss_mib, replace_section, table, write_result  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from mixalign.llvec.scoring import default_head_rows, score_gpt, score_token_ids  # noqa: E402
from mixalign.llvec.textset import load_textset, subset_textset  # noqa: E402
from mixalign.llvec.windows import default_batch_tokens, sliding_windows  # noqa: E402
from mixalign.model.checkpoint import gpt_from_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def one_at_a_time(model, token_ids) -> np.ndarray:
    """The reference protocol: a call per text, a forward pass per window, full head and log-softmax."""
    context, device = model.config.block_size, next(model.parameters()).device
    return np.array([score_token_ids(model.token_logprobs, [ids], context, max_batch_tokens=1, device=device).values[0]
                     for ids in token_ids])


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def window_counts(token_ids, context: int) -> tuple[int, int, int]:
    """(windows, positions through the blocks, scored positions), as score_token_ids cuts the texts."""
    windows = [w for i, ids in enumerate(token_ids) for w in sliding_windows(i, ids, context)]
    return len(windows), sum(len(w.inputs) for w in windows), sum(int((w.targets != -100).sum()) for w in windows)


def flops(model, positions: int, scored: int, mean_window: float) -> dict[str, float]:
    """Forward FLOPs: 2 per multiply-add of the block matmuls and attention, and of the head."""
    c = model.config
    block = 2 * 12 * c.n_embd**2 * c.n_layer  # qkv 3C^2, proj C^2, fc 4C^2, proj 4C^2 per layer
    attention = 2 * 2 * (mean_window / 2) * c.n_embd * c.n_layer  # QK^T and AV over the causal half
    head = 2 * c.n_embd * c.vocab_size
    return {"reference": positions * (block + attention + head), "needed": positions * (block + attention) + scored * head}


def matmul_gflops(device) -> float:
    """Sustained float32 matmul throughput of this device at the current thread count."""
    a, b = (torch.randn(1024, 1024, device=device) for _ in range(2))
    a @ b
    seconds, _ = timed(lambda: [a @ b for _ in range(20)])
    return 20 * 2 * 1024**3 / seconds / 1e9


def render(record: dict) -> str:
    """BENCHMARKS.md's tables of the scoring comparison and its compute ceiling, from its results file."""
    settings, summary = record["settings"], record["summary"]

    def seconds(run: dict, side: str) -> str:
        return ", ".join(f"{t:.2f}" for t in run["seconds"][side])

    speed, ceiling = [], []
    for run in summary["runs"]:
        speed.append(f"| {run['threads']} | {run['texts_per_s']['one_at_a_time']:.1f} ({seconds(run, 'one_at_a_time')} s) | "
                     f"{run['texts_per_s']['batched']:.1f} ({seconds(run, 'batched')} s) | "
                     f"**{run['ratio_batched_over_one_at_a_time']:.2f}x** | {run['max_possible_ratio']:.2f}x | "
                     f"{run['max_abs_diff_nats']:.1e} nats |")
        ceiling.append(f"| {run['threads']} | {run['matmul_gflops']:.1f} GFLOP/s | {run['lower_bound_seconds']:.1f} s | "
                       f"{run['median_seconds']['one_at_a_time']:.1f} s ({run['one_at_a_time_gflops']:.1f} GFLOP/s) | "
                       f"{run['median_seconds']['batched']:.1f} s ({run['batched_gflops']:.1f} GFLOP/s) |")
    best = max(run["ratio_batched_over_one_at_a_time"] for run in summary["runs"])
    worst_diff = max(run["max_abs_diff_nats"] for run in summary["runs"])
    flops = settings["flops"]
    return "\n".join([
        f"{measured_on(record, threads=False)} {settings['n_texts']:,} texts ({settings['windows']:,} windows, "
        f"{settings['window_positions']:,} positions through the blocks for {settings['scored_positions']:,} scored "
        f"tokens), {settings['repeats']} interleaved runs of each side per thread count; medians count.", "",
        "| threads | one at a time texts/s | batched texts/s | **ratio** | ceiling ratio | max \\|diff\\| |",
        "|---|---|---|---|---|---|", *speed, "",
        f"The ceiling: any scorer must run the blocks at every window position and the head at the scored ones, "
        f"{flops['needed'] / 1e12:.3f} TFLOP (the reference spends {flops['reference'] / 1e12:.3f}); at the speed of a "
        "large square matmul on this CPU (measured in the same run) that takes:", "",
        "| threads | matmul throughput (1024², float32) | shortest possible time | one at a time | batched |",
        "|---|---|---|---|---|", *ceiling, "",
        f"Peak RSS {summary['peak_rss_mib']['after_setup']:,.0f} MiB after setup, {summary['peak_rss_mib']['end']:,.0f} MiB "
        f"at the end. Max |difference| <= {summary['target_max_diff_nats']:.0e} nats: "
        f"**{'met' if worst_diff <= summary['target_max_diff_nats'] else 'not met'}**; batched >= "
        f"{summary['target_ratio']:.0f}x one at a time: **{'met' if best >= summary['target_ratio'] else 'not met'}**.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "base.ckpt"))
    parser.add_argument("--n-texts", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each mode per thread count")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to measure")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="smoke run: 100 texts, 1 repeat, 1 thread")
    args = parser.parse_args()
    if args.quick:
        args.n_texts, args.repeats, args.threads = 100, 1, [1]

    model, checkpoint = gpt_from_checkpoint(args.model)
    model.eval().to(args.device)
    tokenizer = Tokenizer.from_str(checkpoint["mixalign"]["tokenizer_json"])
    textset = load_textset("demo")
    textset = subset_textset(textset, args.n_texts) if args.n_texts < len(textset) else textset
    token_ids = [e.ids for e in tokenizer.encode_batch(list(textset.texts), add_special_tokens=False)]
    lengths = np.array([len(ids) for ids in token_ids])
    n_windows, positions, scored = window_counts(token_ids, model.config.block_size)
    work = flops(model, positions, scored, mean_window=positions / n_windows)
    rss_setup = peak_rss_mib()

    reference_values = one_at_a_time(model, token_ids[:20])  # warm both paths
    score_gpt(model, token_ids[:20])
    runs, rows = [], []
    for threads in args.threads:
        if args.device == "cpu":
            torch.set_num_threads(threads)
        gflops = matmul_gflops(args.device)
        times = {"one_at_a_time": [], "batched": []}
        for r in range(args.repeats):
            seconds, reference_values = timed(lambda: one_at_a_time(model, token_ids))
            times["one_at_a_time"].append(seconds)
            seconds, batched = timed(lambda: score_gpt(model, token_ids))
            times["batched"].append(seconds)
            print(f"threads {threads} repeat {r}: one at a time {times['one_at_a_time'][-1]:.2f} s, "
                  f"batched {seconds:.2f} s", flush=True)
        med = {mode: median(ts) for mode, ts in times.items()}
        diff = float(np.max(np.abs(batched.values - reference_values)))
        bound = work["needed"] / (gflops * 1e9)
        run = {
            "threads": threads,
            "seconds": times,
            "median_seconds": med,
            "texts_per_s": {mode: len(token_ids) / s for mode, s in med.items()},
            "ratio_batched_over_one_at_a_time": med["one_at_a_time"] / med["batched"],
            "max_abs_diff_nats": diff,
            "matmul_gflops": gflops,
            "one_at_a_time_gflops": work["reference"] / med["one_at_a_time"] / 1e9,
            "batched_gflops": work["needed"] / med["batched"] / 1e9,
            "lower_bound_seconds": bound,
            "max_possible_ratio": med["one_at_a_time"] / bound,
        }
        runs.append(run)
        rows.append([threads, run["texts_per_s"]["one_at_a_time"], run["texts_per_s"]["batched"],
                     run["ratio_batched_over_one_at_a_time"], run["max_possible_ratio"], diff])
    rss_end = peak_rss_mib()

    settings = {
        "model": args.model if not Path(args.model).is_relative_to(ROOT) else str(Path(args.model).relative_to(ROOT)),
        "model_config": {k: getattr(model.config, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")},
        "device": args.device,
        "n_texts": len(token_ids),
        "tokens_per_text": {"min": int(lengths.min()), "median": float(np.median(lengths)), "max": int(lengths.max())},
        "windows": n_windows,
        "window_positions": positions,
        "scored_positions": scored,
        "flops": work,
        "max_batch_tokens": default_batch_tokens(args.device),
        "head_rows_per_chunk": default_head_rows(args.device),
        "repeats": args.repeats,
        "quick": args.quick,
    }
    summary = {"runs": runs, "peak_rss_mib": {"after_setup": rss_setup, "end": rss_end},
               "target_ratio": 4.0, "target_max_diff_nats": 1e-4}
    path = write_result("bench_scoring_quick" if args.quick else "bench_scoring", {"settings": settings, "summary": summary})
    if not args.quick and args.device == "cpu":
        replace_section(REPO / "BENCHMARKS.md", "BENCH_SCORING", render(json.loads(path.read_text())), path)

    print(f"\n{len(token_ids)} texts, {scored:,} scored tokens, {positions:,} window positions "
          f"({positions / scored:.2f} per scored token); budget {settings['max_batch_tokens']} tokens, "
          f"head chunks of {settings['head_rows_per_chunk']} rows")
    print(table(["threads", "one-at-a-time texts/s", "batched texts/s", "ratio", "ceiling ratio", "max |diff| nats"], rows))
    print(f"peak RSS {rss_end} MiB; results: {path}")


if __name__ == "__main__":
    main()
