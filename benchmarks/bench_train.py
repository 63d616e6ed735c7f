"""Training throughput: Lightning (`Trainer.fit` of `NanoGPTModule` + `PileMixtureDataModule`) vs a plain loop.

Both sides train the demo config's model (configs/pile.yaml: 4 layers, 4 heads, 128 wide, block 128,
batch 16, tokenizer demo-4k, data source "demo") from the same initial weights on the same batches
(`MixtureBatches.batch(i)`), with AdamW over `param_groups`, the same warm-up + cosine schedule,
gradient clipping at 1.0 and the same number of threads. Tokens/s is measured over `--steps`
optimizer steps after `--warmup` steps. Each run is a fresh subprocess and the runs are interleaved
(L, P, L, P, ...), so slow phases of a shared machine hit both sides alike; the figure that counts
is the ratio of the medians.

The Lightning side is the product's configuration: TensorBoard logger at log_every_n_steps=10
(as pile.yaml), gradient_clip_val=1.0, precision 32; progress bar, checkpointing and the model
summary off; validation off (limit_val_batches=0: validation is not training throughput).

    python benchmarks/bench_train.py             # 5 + 5 runs, 20 warm-up + 100 timed steps each
    python benchmarks/bench_train.py --quick     # 2 + 2 runs, 5 + 20 steps: a smoke run
    python benchmarks/bench_train.py --profile   # cProfile one Lightning and one plain run
    python benchmarks/bench_train.py --gpu       # GPU section (GPT-2 124M, bf16-mixed, torch.compile, MFU)
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import (  # noqa: E402
    PILE_MODEL,
    PILE_OPTIM,
    PILE_TRAINER,
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

LR_DECAY_STEPS = 600  # pile.yaml's max_steps: the product's schedule
GPT2_124M = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, dropout=0.0)
# Dense bf16 peak FLOP/s by device name, for MFU (override with --peak-tflops).
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


# -- workers (one run each, in a fresh process) ----------------------------------------------------

def _sizes(args) -> tuple[dict, dict]:
    if args.gpu:
        return dict(GPT2_124M), {"tokenizer": "gpt2", "block_size": 1024, "batch_size": args.gpu_batch}
    return dict(PILE_MODEL), {}


def worker_lightning(args) -> dict:
    import lightning as L
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import TensorBoardLogger

    from mixalign.model.module import NanoGPTModule

    class StepTimer(Callback):
        """Clock at the end of step `warmup` and of the last step: the interval holds `steps` whole steps."""

        def __init__(self):
            self.t0 = self.t1 = None
            self.loss = None

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            step = trainer.global_step
            if step == args.warmup:
                if args.device == "cuda":
                    torch.cuda.synchronize()
                self.t0 = time.perf_counter()
            elif step == args.warmup + args.steps:
                if args.device == "cuda":
                    torch.cuda.synchronize()
                self.t1 = time.perf_counter()
                self.loss = float(outputs["loss"])

    model_sizes, data_overrides = _sizes(args)
    L.seed_everything(SEED, verbose=False)
    dm = prepared_datamodule(args.cache_dir, **data_overrides)
    module = NanoGPTModule(**model_sizes, vocab_size=dm.vocab_size, **PILE_OPTIM, lr_decay_steps=LR_DECAY_STEPS,
                           compile=args.compile)  # fused AdamW: the module's default on CUDA
    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as logdir:
        trainer = L.Trainer(
            accelerator="gpu" if args.device == "cuda" else "cpu",
            devices=1,
            max_steps=args.warmup + args.steps,
            logger=TensorBoardLogger(logdir, name="bench"),
            log_every_n_steps=PILE_TRAINER["log_every_n_steps"],
            gradient_clip_val=PILE_TRAINER["gradient_clip_val"],
            precision="bf16-mixed" if args.gpu else PILE_TRAINER["precision"],
            enable_progress_bar=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            callbacks=[timer],
            default_root_dir=logdir,
        )
        trainer.fit(module, datamodule=dm)
    tokens = args.steps * dm.batch_size * dm.block_size
    seconds = timer.t1 - timer.t0
    return _worker_result("lightning", tokens, seconds, timer.loss, module.model, dm, args)


def worker_plain(args) -> dict:
    from mixalign.model.nanogpt import GPT, GPTConfig
    from mixalign.model.optim import lr_at, param_groups

    model_sizes, data_overrides = _sizes(args)
    torch.manual_seed(SEED)  # the same initial weights as the Lightning side (seed_everything, then GPT)
    dm = prepared_datamodule(args.cache_dir, **data_overrides)
    device = torch.device(args.device)
    model = GPT(GPTConfig(**{k: v for k, v in model_sizes.items()}, vocab_size=dm.vocab_size)).to(device)
    hp = PILE_OPTIM
    optimizer = torch.optim.AdamW(param_groups(model, hp["weight_decay"]), lr=hp["learning_rate"], betas=hp["betas"],
                                  fused=device.type == "cuda" or None)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_at(s, hp["learning_rate"], hp["min_lr"], hp["warmup_steps"], LR_DECAY_STEPS) / hp["learning_rate"]
    )
    if args.compile:
        model.compile()
    batches = dm.train_dataset(dm.weights)
    model.train()
    t0 = loss = None
    for index in range(args.warmup + args.steps):
        batch = batches.batch(index)
        inputs, targets = batch["input"].to(device, non_blocking=True), batch["target"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(args.gpu)):
            loss = -model.token_logprobs(inputs, targets).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), PILE_TRAINER["gradient_clip_val"])
        optimizer.step()
        schedule.step()
        if index + 1 == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    tokens = args.steps * dm.batch_size * dm.block_size
    return _worker_result("plain", tokens, seconds, float(loss), model, dm, args)


def _worker_result(side: str, tokens: int, seconds: float, loss: float, model, dm, args) -> dict:
    result = {
        "side": side,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "samples_per_s": tokens / seconds / dm.block_size,
        "final_loss": loss,
        "threads": torch.get_num_threads(),
        "peak_rss_mib": peak_rss_mib(),
    }
    if args.device == "cuda":
        result["max_memory_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        flops = model.estimate_flops_per_token()
        name = torch.cuda.get_device_name(0)
        peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        result["flops_per_token"] = flops
        result["mfu"] = None if peak is None else flops * result["tokens_per_s"] / (peak * 1e12)
        result["peak_tflops_assumed"] = peak
    return result


# -- orchestration ---------------------------------------------------------------------------------

def _spawn(side: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", side, "--warmup", str(args.warmup), "--steps", str(args.steps),
           "--cache-dir", args.cache_dir, "--device", args.device]
    cmd += ["--threads", str(args.threads)]
    if args.gpu:
        cmd += ["--gpu", "--gpu-batch", str(args.gpu_batch)]
        if args.peak_tflops:
            cmd += ["--peak-tflops", str(args.peak_tflops)]
    if args.compile:
        cmd += ["--compile"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"{side} worker failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def profile(args) -> None:
    """cProfile one Lightning and one plain run in this process; the cumulative tables go to results/."""
    report = []
    for side, fn in (("lightning", worker_lightning), ("plain", worker_plain)):
        profiler = cProfile.Profile()
        profiler.enable()
        result = fn(args)
        profiler.disable()
        stream = io.StringIO()
        stats = pstats.Stats(profiler, stream=stream).strip_dirs()
        stats.sort_stats("tottime").print_stats(35)
        stats.sort_stats("cumulative").print_stats(60)
        report.append(f"===== {side}: {result['tokens_per_s']:.0f} tokens/s under cProfile =====\n{stream.getvalue()}")
    path = RESULTS / "bench_train_profile.txt"
    from mixalign.io import write_bytes_atomic

    write_bytes_atomic(path, "\n".join(report).encode())
    print(f"profiles written to {path}")


def render(record: dict) -> str:
    """BENCHMARKS.md's table of one comparison, from its results file."""
    summary, settings = record["summary"], record["settings"]
    rows = []
    for side in ("lightning", "plain"):
        runs = " ".join(f"{r['tokens_per_s']:.0f}" for r in record["runs"] if r["side"] == side)
        rows.append(f"| {side} | {summary[side + '_median_tokens_per_s']:,.0f} | {runs} | "
                    f"{summary['peak_rss_mib'][side]:,.0f} MiB |")
    ratio, target = summary["ratio_lightning_over_plain"], summary["target_ratio"]
    return "\n".join([
        f"{measured_on(record)} {settings['runs_each']} runs a side, interleaved; each a fresh process, "
        f"{settings['warmup_steps']} untimed then {settings['timed_steps']} timed steps of {settings['batch_size']} x "
        f"{settings['model']['block_size']} tokens.", "",
        "| side | median tokens/s | runs (tokens/s) | peak RSS |", "|---|---|---|---|", *rows,
        f"| **ratio of medians** | **{ratio:.3f}** | | |", "",
        f"Target Lightning / plain >= {target}: **{'met' if ratio >= target else 'not met'}**. The final losses of "
        f"the two sides differ by at most {summary['max_final_loss_difference']:.1e}.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs of each side, interleaved L, P, L, P, ...")
    parser.add_argument("--warmup", type=int, default=10, help="untimed optimizer steps first")
    parser.add_argument("--steps", type=int, default=40, help="timed optimizer steps")
    add_run_arguments(parser, "smoke run: 2 runs each, 5 + 20 steps")
    parser.add_argument("--profile", action="store_true", help="cProfile one run of each side instead")
    parser.add_argument("--gpu", action="store_true", help="GPU section: GPT-2 124M, bf16-mixed, torch.compile, MFU")
    parser.add_argument("--gpu-batch", type=int, default=8, help="GPU section: windows of 1024 tokens per batch")
    parser.add_argument("--peak-tflops", type=float, default=None, help="GPU peak bf16 TFLOP/s for MFU")
    parser.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=("lightning", "plain"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.runs, args.warmup, args.steps = 2, 5, 20
    if args.gpu:
        if not torch.cuda.is_available():
            raise SystemExit("--gpu: no CUDA device here (not run: no GPU in this session)")
        args.device, args.compile = "cuda", True
    set_threads(args.threads)

    if args.worker:
        result = (worker_lightning if args.worker == "lightning" else worker_plain)(args)
        print(json.dumps(result))
        return
    prepared_datamodule(args.cache_dir, **_sizes(args)[1])  # tokenize once, outside every timed run
    if args.profile:
        profile(args)
        return

    runs = []
    for r in range(args.runs):
        for side in ("lightning", "plain"):
            result = _spawn(side, args)
            result["run"] = r
            runs.append(result)
            print(f"run {r} {side:<9} {result['tokens_per_s']:>10.0f} tokens/s  ({result['seconds']:.2f} s, "
                  f"loss {result['final_loss']:.4f}, peak RSS {result['peak_rss_mib']:.0f} MiB)", flush=True)
    lightning = [r for r in runs if r["side"] == "lightning"]
    plain = [r for r in runs if r["side"] == "plain"]
    med_l = median([r["tokens_per_s"] for r in lightning])
    med_p = median([r["tokens_per_s"] for r in plain])
    ratio = med_l / med_p
    summary = {
        "lightning_median_tokens_per_s": med_l,
        "plain_median_tokens_per_s": med_p,
        "ratio_lightning_over_plain": ratio,
        "target_ratio": 0.95,
        "target_met": ratio >= 0.95,
        "lightning_samples_per_s": med_l / (1024 if args.gpu else PILE_MODEL["block_size"]),
        "max_final_loss_difference": max(abs(a["final_loss"] - b["final_loss"]) for a, b in zip(lightning, plain)),
        "peak_rss_mib": {"lightning": max(r["peak_rss_mib"] for r in lightning), "plain": max(r["peak_rss_mib"] for r in plain)},
    }
    if args.gpu:
        summary["mfu"] = {"lightning": median([r["mfu"] or 0 for r in lightning]), "plain": median([r["mfu"] or 0 for r in plain])}
        summary["max_memory_allocated_mib"] = {
            "lightning": max(r["max_memory_allocated_mib"] for r in lightning),
            "plain": max(r["max_memory_allocated_mib"] for r in plain),
        }
    settings = {
        "runs_each": args.runs, "warmup_steps": args.warmup, "timed_steps": args.steps,
        "model": _sizes(args)[0], "batch_size": args.gpu_batch if args.gpu else 16,
        "lightning_config": "TensorBoardLogger, log_every_n_steps=10, gradient_clip_val=1.0, precision 32 (bf16-mixed on GPU), "
                            "progress bar / checkpointing / model summary off, validation off",
        "quick": args.quick, "device": args.device,
    }
    name = "bench_train_gpu" if args.gpu else ("bench_train_quick" if args.quick else "bench_train")
    if args.threads != 1:
        name += f"_threads{args.threads or 'default'}"
    path = write_result(name, {"settings": settings, "summary": summary, "runs": runs})
    if name in ("bench_train", "bench_train_threadsdefault"):
        replace_section(REPO / "BENCHMARKS.md", name.upper(), render(json.loads(path.read_text())), path)

    print()
    print(table(["side", "median tokens/s", "runs (tokens/s)", "peak RSS MiB"], [
        ["lightning", med_l, " ".join(f"{r['tokens_per_s']:.0f}" for r in lightning), summary["peak_rss_mib"]["lightning"]],
        ["plain", med_p, " ".join(f"{r['tokens_per_s']:.0f}" for r in plain), summary["peak_rss_mib"]["plain"]],
    ]))
    print(f"\nratio of medians Lightning / plain = {ratio:.3f} (target >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'}); "
          f"final losses differ by <= {summary['max_final_loss_difference']:.2e}")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
