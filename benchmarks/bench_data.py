"""Data: samples/s of the weighted domain sampler against the rate at which training consumes samples.

Sampler: `MixtureBatches.batch(i)` over the prepared demo data (configs/pile.yaml's data: demo
corpus, demo-4k, uniform weights, block 128, batch 16), called directly and also through the
`DataLoader` the datamodule hands to Lightning (batch_size=None, num_workers=0), which is what
the trainer actually pulls from. Training rate: the Lightning median samples/s from
`benchmarks/results/bench_train.json` when it exists (same machine, same model), else measured
here with a short plain training loop on the same batches.

    python benchmarks/bench_data.py            # 3 repeats of 2000 batches
    python benchmarks/bench_data.py --quick    # 1 repeat of 200 batches
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import (  # noqa: E402
    PILE_MODEL,
    PILE_OPTIM,
    REPO,
    RESULTS,
    SEED,
    add_run_arguments,
    measured_on,
    median,
    peak_rss_mib,
    prepared_datamodule,
    replace_section,
    set_threads,
    table,
    write_result,
)


def training_rate(dm, steps: int) -> tuple[float, str]:
    """Samples/s of training: from bench_train's recorded result, else a short plain loop here."""
    recorded = RESULTS / "bench_train.json"
    if recorded.exists():
        data = json.loads(recorded.read_text())
        return data["summary"]["lightning_samples_per_s"], f"{recorded.relative_to(RESULTS.parent.parent)} (Lightning median)"
    from mixalign.model.nanogpt import GPT, GPTConfig
    from mixalign.model.optim import param_groups

    torch.manual_seed(SEED)
    model = GPT(GPTConfig(**PILE_MODEL, vocab_size=dm.vocab_size))
    optimizer = torch.optim.AdamW(param_groups(model, PILE_OPTIM["weight_decay"]), lr=PILE_OPTIM["learning_rate"])
    batches = dm.train_dataset(dm.weights)
    start = None
    for i in range(steps + 3):
        if i == 3:
            start = time.perf_counter()
        batch = batches.batch(i)
        loss = -model.token_logprobs(batch["input"], batch["target"]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * dm.batch_size / (time.perf_counter() - start), f"plain loop measured here ({steps} steps)"


def render(record: dict) -> str:
    """BENCHMARKS.md's table of the sampler's rate against training's, from its results file."""
    summary, settings = record["summary"], record["settings"]
    met = "met" if summary["target_met"] else "not met"
    return "\n".join([
        f"{measured_on(record)} {settings['repeats']} repeats of {settings['batches']:,} batches of "
        f"{settings['batch_size']} x {settings['block_size']} tokens over {settings['domains']} domains ({settings['weights']} "
        f"weights); medians count. The training rate: {summary['training_rate_source']}.", "",
        "| what | samples/s | × training |", "|---|---|---|",
        f"| `MixtureBatches.batch` | {summary['sampler_samples_per_s']:,.0f} ({summary['sampler_ms_per_batch']:.3f} ms per batch) | "
        f"**{summary['ratio_sampler_over_training']:,.0f}x** |",
        f"| DataLoader, as Lightning pulls it | {summary['dataloader_samples_per_s']:,.0f} | "
        f"{summary['ratio_dataloader_over_training']:,.0f}x |",
        f"| training consumption | {summary['training_samples_per_s']:,.1f} | 1x |", "",
        f"Target >= {summary['target_ratio']:.0f}x: **{met}**. Peak RSS {summary['peak_rss_mib']['end']:,.0f} MiB.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=20, help="plain-loop steps if bench_train.json is absent")
    add_run_arguments(parser, "smoke run: 200 batches, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.repeats, args.train_steps = 200, 1, 5
    set_threads(args.threads)

    dm = prepared_datamodule(args.cache_dir)
    dataset = dm.train_dataset(dm.weights)
    dataset.batch(0)  # map the token files outside the timing
    rss_setup = peak_rss_mib()

    direct, loader = [], []
    for r in range(args.repeats):
        start = time.perf_counter()
        for i in range(args.batches):
            dataset.batch(i)
        direct.append(args.batches * dm.batch_size / (time.perf_counter() - start))

        iterator = iter(dm.train_dataloader())  # batch indices; the batch is made from each, as in training
        start = time.perf_counter()
        for _ in range(args.batches):
            dataset.batch(int(next(iterator)["index"]))
        loader.append(args.batches * dm.batch_size / (time.perf_counter() - start))
        print(f"repeat {r}: MixtureBatches.batch {direct[-1]:10.0f} samples/s   via DataLoader {loader[-1]:10.0f} samples/s", flush=True)

    rate, source = training_rate(dm, args.train_steps)
    med_direct, med_loader = median(direct), median(loader)
    summary = {
        "sampler_samples_per_s": med_direct,
        "dataloader_samples_per_s": med_loader,
        "training_samples_per_s": rate,
        "training_rate_source": source,
        "ratio_sampler_over_training": med_direct / rate,
        "ratio_dataloader_over_training": med_loader / rate,
        "sampler_ms_per_batch": 1000 * dm.batch_size / med_direct,
        "target_ratio": 20.0,
        "target_met": bool(min(med_direct, med_loader) / rate >= 20),
        "peak_rss_mib": {"after_setup": rss_setup, "end": peak_rss_mib()},
    }
    settings = {"batches": args.batches, "repeats": args.repeats, "batch_size": dm.batch_size, "block_size": dm.block_size,
                "domains": len(dm.domains), "weights": "uniform", "threads": torch.get_num_threads(), "quick": args.quick}
    path = write_result("bench_data_quick" if args.quick else "bench_data", {"settings": settings, "summary": summary,
                                                                             "direct": direct, "dataloader": loader})
    if not args.quick:
        replace_section(REPO / "BENCHMARKS.md", "BENCH_DATA", render(json.loads(path.read_text())), path)
    print()
    print(table(["what", "samples/s", "x training"], [
        ["MixtureBatches.batch", med_direct, med_direct / rate],
        ["DataLoader (as Lightning pulls)", med_loader, med_loader / rate],
        ["training consumption", rate, 1.0],
    ]))
    print(f"\nsampler / training = {med_direct / rate:.0f}x (target >= 20x: {'met' if summary['target_met'] else 'NOT met'}); "
          f"training rate from {source}")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
