"""GPU check in one command (designed for at most 8 minutes on one H100): GPT-2 124M through Lightning against a plain
loop, the mixture method's probe time and share of a 10,000-step run, batched against one-at-a-time
scoring, and peak GPU memory; one JSON, `benchmarks/results/gpu_check.json`.

1. Training (each side a fresh process, as in bench_train.py): mixalign's `GPT` with GPT-2 small's shape
   (12 layers, 12 heads, 768 wide, block 1024, vocabulary 50304), batch 12 (pile-gpt2.yaml's), the
   demo corpus tokenized with gpt2, the same initial weights and batches. Lightning: `NanoGPTModule`
   (`compile=True`, fused AdamW: its default on CUDA) in `lightning.Trainer` at bf16-mixed, gradient
   clipping 1.0, TensorBoard at log_every_n_steps 50 (as the config); progress bar, checkpointing,
   model summary and validation off. Plain: the same model, `torch.compile`, fused AdamW, bf16 autocast,
   clipping. Tokens/s over `--steps` optimizer steps after `--warmup` (compilation falls in the warm-up);
   one micro-batch a step (the config's accumulate_grad_batches 5 is left out on both sides).
   MFU = flops per token (6 x parameters + attention, `GPT.estimate_flops_per_token`) x tokens/s over
   the device's dense bf16 peak (PEAK_BF16; None for a device not in it).
2. Probe: one probe of S steps as the method trains it (`mixture.probes.train_steps`: uncompiled, bf16
   autocast, batch 12) from the same model, then the text set scored (`score_gpt`; the demo text set in
   gpt2 tokens, up to pile-gpt2.yaml's n_texts; its time scaled by tokens to the text set the config plans).
   Its time, times the probes pile-gpt2.yaml plans
   (benchmarks/cost_account.py: 22 domain probes of probe_steps, the candidates of candidate_steps), over a
   10,000-step main run's time (10,000 x accumulate_grad_batches x the Lightning step time). The target's
   reads beside each probe (exact KL) are not timed: the target here is not the real one.
3. Scoring: `score_gpt` (batched) against every window of every text alone (`score_token_ids` with a
   one-token budget), the same random GPT-2 124M, the same texts, bf16 autocast.
4. Peak GPU memory (`torch.cuda.max_memory_allocated`) of each part.

    python benchmarks/gpu_check.py                         # needs CUDA; exits 2 without it
    python benchmarks/gpu_check.py --cpu-smoke --out /tmp  # every part at tiny sizes on the CPU (a test)
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import DEFAULT_CACHE, RESULTS, SEED, peak_rss_mib, prepared_datamodule, read_config, write_result  # noqa: E402

NO_CUDA = "gpu_check needs a CUDA device"
GPT2_124M = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304)
TINY = dict(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=4096)
# pile-gpt2.yaml's optimizer and schedule
OPTIM = dict(learning_rate=6.0e-4, min_lr=6.0e-5, warmup_steps=2000, weight_decay=0.1, betas=(0.9, 0.95))
DECAY_STEPS = 600_000
MAIN_RUN_STEPS = 10_000
ACCUMULATE = 5  # pile-gpt2.yaml's accumulate_grad_batches: micro-batches in one of the main run's steps
DEVICES = 8  # pile-gpt2.yaml's node (cost_account.py): probes dealt round-robin over them, the main run data parallel


def peak_bf16(name: str) -> float | None:
    """Dense bf16 peak FLOP/s of a device, by name: H100 SXM and H200 989e12, A100 312e12, else None."""
    if "H200" in name or ("H100" in name and not any(k in name for k in ("PCIe", "NVL"))):
        return 989e12
    if "A100" in name:
        return 312e12
    return None


def sizes(args) -> tuple[dict, dict]:
    """(model shape, data overrides) of this mode."""
    if args.cpu_smoke:
        return dict(TINY), {"tokenizer": "demo-4k", "block_size": 64, "batch_size": 2}
    return dict(GPT2_124M), {"tokenizer": "gpt2", "block_size": 1024, "batch_size": args.batch, "num_workers": 4}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def gpu_memory_mib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None


# -- 1. training: one side per process -------------------------------------------------------------

def worker_lightning(args) -> dict:
    import lightning as L
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import TensorBoardLogger

    from mixalign.model.module import NanoGPTModule

    class StepTimer(Callback):
        """Clock at the end of step `warmup` and of the last step: the interval holds `steps` whole steps."""

        t0 = t1 = loss = None

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step in (args.warmup, args.warmup + args.steps):
                sync()
                if trainer.global_step == args.warmup:
                    self.t0 = time.perf_counter()
                else:
                    self.t1, self.loss = time.perf_counter(), float(outputs["loss"])

    model_shape, data = sizes(args)
    L.seed_everything(SEED, verbose=False)
    dm = prepared_datamodule(args.cache_dir, **data)
    module = NanoGPTModule(**model_shape, **OPTIM, lr_decay_steps=DECAY_STEPS, compile=args.compile)
    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as logdir:
        trainer = L.Trainer(
            accelerator="gpu" if args.device == "cuda" else "cpu", devices=1, max_steps=args.warmup + args.steps,
            precision=args.precision, gradient_clip_val=1.0, logger=TensorBoardLogger(logdir, name="gpu_check"),
            log_every_n_steps=50, enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
            limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer], default_root_dir=logdir,
        )
        trainer.fit(module, datamodule=dm)
    return side_result("lightning", args, dm, timer.t1 - timer.t0, timer.loss, module.model)


def worker_plain(args) -> dict:
    from mixalign.model.nanogpt import GPT, GPTConfig
    from mixalign.model.optim import adamw, lr_at

    model_shape, data = sizes(args)
    torch.manual_seed(SEED)  # the same initial weights as the Lightning side (seed_everything, then GPT)
    dm = prepared_datamodule(args.cache_dir, **data)
    device = torch.device(args.device)
    model = GPT(GPTConfig(**model_shape)).to(device)
    optimizer = adamw(model, OPTIM["learning_rate"], OPTIM["weight_decay"], OPTIM["betas"])  # fused on CUDA
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(
        s, OPTIM["learning_rate"], OPTIM["min_lr"], OPTIM["warmup_steps"], DECAY_STEPS) / OPTIM["learning_rate"])
    if args.compile:
        model.compile()
    batches, t0, loss = dm.train_dataset(dm.weights), None, None
    model.train()
    for index in range(args.warmup + args.steps):
        batch = batches.batch(index)
        inputs, targets = batch["input"].to(device, non_blocking=True), batch["target"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed"):
            loss = -model.token_logprobs(inputs, targets).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if index + 1 == args.warmup:
            sync()
            t0 = time.perf_counter()
    sync()
    return side_result("plain", args, dm, time.perf_counter() - t0, float(loss), model)


def side_result(side: str, args, dm, seconds: float, loss: float, model) -> dict:
    tokens = args.steps * dm.batch_size * dm.block_size
    flops = model.estimate_flops_per_token()
    peak = peak_bf16(torch.cuda.get_device_name(0)) if args.device == "cuda" else None
    return {"side": side, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "seconds_per_step": seconds / args.steps, "final_loss": loss, "flops_per_token": flops,
            "mfu": None if peak is None else flops * tokens / seconds / peak, "peak_flops_assumed": peak,
            "max_memory_allocated_mib": gpu_memory_mib(), "peak_rss_mib": peak_rss_mib()}


def spawn(side: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", side, "--warmup", str(args.warmup), "--steps", str(args.steps),
           "--batch", str(args.batch), "--cache-dir", args.cache_dir]
    if args.cpu_smoke:
        cmd.append("--cpu-smoke")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.worker_timeout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"gpu_check: the {side} worker failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def training(args) -> dict:
    runs = {side: spawn(side, args) for side in ("lightning", "plain")}
    for side, r in runs.items():
        mfu = f"MFU {r['mfu']:.1%}" if r["mfu"] is not None else "MFU n/a"
        print(f"training {side:<9} {r['tokens_per_s']:>10,.0f} tokens/s  {mfu}  "
              f"peak GPU memory {r['max_memory_allocated_mib']} MiB", flush=True)
    runs["ratio_lightning_over_plain"] = runs["lightning"]["tokens_per_s"] / runs["plain"]["tokens_per_s"]
    return runs


# -- 2. and 3.: probe and scoring, in this process -------------------------------------------------

def text_ids(tokenizer: str, n_texts: int) -> list[list[int]]:
    """The demo text set's first `n_texts` (evenly spaced) in `tokenizer`'s ids."""
    from mixalign.data.tokenizer import load_tokenizer
    from mixalign.llvec.textset import load_textset, resolve_textset, subset_textset

    textset = load_textset(resolve_textset("demo"))
    textset = subset_textset(textset, n_texts) if n_texts < len(textset) else textset
    return [e.ids for e in load_tokenizer(tokenizer).encode_batch(list(textset.texts), add_special_tokens=False)]


def fresh_model(args):
    from mixalign.model.nanogpt import GPT, GPTConfig

    torch.manual_seed(SEED)
    return GPT(GPTConfig(**sizes(args)[0])).to(args.device)


def autocast(args):
    return torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.device == "cuda")


def probe(args, plan: dict) -> dict:
    """One probe of S steps (`train_steps`, as the method trains it), then the text set scored."""
    from mixalign.llvec.scoring import score_gpt
    from mixalign.mixture.probes import ProbeSettings, train_steps

    _, data = sizes(args)
    dm = prepared_datamodule(args.cache_dir, **data)
    token_ids = text_ids(data["tokenizer"], plan["n_texts"])
    settings = ProbeSettings(steps=args.probe_steps, learning_rate=OPTIM["learning_rate"], weight_decay=OPTIM["weight_decay"],
                             betas=OPTIM["betas"], batch_size=dm.batch_size, block_size=dm.block_size, grad_clip=1.0, seed=SEED)
    model = fresh_model(args)
    batches = dm.train_dataset(dm.weights)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    train_steps(model, batches, ProbeSettings(**{**settings.__dict__, "steps": 2}), "bfloat16" if args.device == "cuda" else None)
    sync()  # warm: kernels chosen, allocator grown
    start = time.perf_counter()
    train_steps(model, batches, settings, "bfloat16" if args.device == "cuda" else None)
    sync()
    trained = time.perf_counter() - start
    start = time.perf_counter()
    with autocast(args):
        score_gpt(model, token_ids)
    sync()
    scored = time.perf_counter() - start
    return {"steps": args.probe_steps, "train_seconds": trained, "seconds_per_step": trained / args.probe_steps,
            "score_seconds": scored, "n_texts": len(token_ids), "scored_tokens": sum(len(t) - 1 for t in token_ids),
            "max_memory_allocated_mib": gpu_memory_mib()}


def method_share(probe_result: dict, plan: dict, main_step_seconds: float) -> dict:
    """The method's time over a 10,000-step main run's, from the measured probe and main-run step times."""
    from cost_account import PILE_TOKENS_PER_TEXT

    step = probe_result["seconds_per_step"]
    # the text set pile-gpt2.yaml plans (n_texts Pile texts, cost_account.py's tokens a text), at the measured rate
    score = probe_result["score_seconds"] / probe_result["scored_tokens"] * plan["n_texts"] * PILE_TOKENS_PER_TEXT
    one = probe_result["train_seconds"] + score
    domain_probe = plan["probe_steps"] * step + score
    candidate_probe = plan["candidate_steps"] * step + score
    main = MAIN_RUN_STEPS * ACCUMULATE * main_step_seconds
    serial = plan["domain_probes"] * domain_probe + plan["candidate_probes"] * candidate_probe
    dealt = (math.ceil(plan["domain_probes"] / DEVICES) * domain_probe
             + math.ceil(plan["candidate_probes"] / DEVICES) * candidate_probe)
    return {
        "main_run_steps": MAIN_RUN_STEPS, "main_run_seconds_one_device": main,
        "one_probe_of_S_steps_seconds": one, "planned_score_seconds": score,
        "simple_share": one * plan["probes"] / main,
        "share_one_device": serial / main,
        f"wall_share_{DEVICES}_devices": dealt / (main / DEVICES),
        "note": "simple: one probe of the S steps timed x the planned probes over 10,000 main-run steps (each "
                f"{ACCUMULATE} micro-batches of the Lightning side's timed step); one device: domain probes at probe_steps, "
                "candidates at candidate_steps, each scoring the planned text set once (its time scaled by tokens from the "
                f"demo text set's); {DEVICES} devices: probes dealt round-robin (ceil(K/8) probe times a phase), "
                "the main run data parallel without communication cost",
    }


def one_at_a_time(model, token_ids) -> np.ndarray:
    """Every window of every text alone (a one-token batch budget), as bench_scoring.py's reference."""
    from mixalign.llvec.scoring import score_token_ids

    device = next(model.parameters()).device
    return np.array([score_token_ids(model.token_logprobs, [ids], model.config.block_size, max_batch_tokens=1,
                                     device=device).values[0] for ids in token_ids])


def scoring(args) -> dict:
    from mixalign.llvec.scoring import score_gpt

    model = fresh_model(args).eval()
    token_ids = text_ids(sizes(args)[1]["tokenizer"], args.score_texts)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with autocast(args):
        one_at_a_time(model, token_ids[:4]), score_gpt(model, token_ids[:4])  # warm both paths
        sync()
        start = time.perf_counter()
        reference = one_at_a_time(model, token_ids)
        sync()
        middle = time.perf_counter()
        batched = score_gpt(model, token_ids).values
        sync()
    single, together = middle - start, time.perf_counter() - middle
    return {"n_texts": len(token_ids), "tokens": sum(len(t) for t in token_ids),
            "one_at_a_time_seconds": single, "batched_seconds": together,
            "texts_per_s": {"one_at_a_time": len(token_ids) / single, "batched": len(token_ids) / together},
            "ratio_batched_over_one_at_a_time": single / together,
            "max_abs_diff_nats": float(np.max(np.abs(batched - reference))),
            "precision": "bf16 autocast" if args.device == "cuda" else "float32",
            "max_memory_allocated_mib": gpu_memory_mib()}


# -- orchestration ---------------------------------------------------------------------------------

def planned_probes(args) -> dict:
    """pile-gpt2.yaml's probes (benchmarks/cost_account.py's account) and their lengths; tiny in --cpu-smoke."""
    from cost_account import CONFIGS, account

    from mixalign.mixture.candidates import needs_domain_probes

    mixture = read_config("pile-gpt2.yaml")["mixture"]
    cost = account("pile-gpt2.yaml", **CONFIGS["pile-gpt2.yaml"])
    domains = CONFIGS["pile-gpt2.yaml"]["domains"] if needs_domain_probes(mixture["candidates"], mixture["selection"]) else 0
    return {"config": "configs/pile-gpt2.yaml", "probes": cost["probes"], "domain_probes": domains,
            "candidate_probes": cost["probes"] - domains, "probe_steps": mixture["probe_steps"],
            "candidate_steps": mixture.get("candidate_steps") or mixture["probe_steps"],
            "n_texts": 8 if args.cpu_smoke else mixture["n_texts"], "cost_account_line": cost["line"]}


def configure(args) -> None:
    """Device, precision and compile of the mode; --cpu-smoke shrinks every part."""
    args.device = "cpu" if args.cpu_smoke else "cuda"
    args.precision = "32-true" if args.cpu_smoke else "bf16-mixed"
    args.compile = not args.cpu_smoke  # compiling a tiny model on a CPU would only test the compiler
    if args.cpu_smoke:
        args.warmup, args.steps, args.probe_steps, args.score_texts = 1, 2, 2, 8


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warmup", type=int, default=15, help="untimed training steps first (compilation falls here)")
    parser.add_argument("--steps", type=int, default=50, help="timed training steps of each side")
    parser.add_argument("--batch", type=int, default=12, help="windows of 1024 tokens a step (pile-gpt2.yaml: 12)")
    parser.add_argument("--probe-steps", type=int, default=200, help="S: steps of the timed probe (pile-gpt2.yaml: 200)")
    parser.add_argument("--score-texts", type=int, default=200, help="texts of the batched / one-at-a-time comparison")
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE, help="prepared-data cache")
    parser.add_argument("--out", default=str(RESULTS), help="results folder (default benchmarks/results)")
    parser.add_argument("--cpu-smoke", action="store_true", help="every part at tiny sizes on the CPU (tiny model, 2 steps)")
    parser.add_argument("--worker-timeout", type=int, default=300, help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=("lightning", "plain"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    configure(args)
    return args


def main() -> None:
    args = parse()
    if not args.cpu_smoke and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        raise SystemExit(2)
    if args.worker:
        print(json.dumps((worker_lightning if args.worker == "lightning" else worker_plain)(args)))
        return
    start = time.perf_counter()
    prepared_datamodule(args.cache_dir, **sizes(args)[1])  # tokenize once, outside every timed part
    plan = planned_probes(args)
    train = training(args)
    probed = probe(args, plan)
    share = method_share(probed, plan, train["lightning"]["seconds_per_step"])
    print(f"probe of {probed['steps']} steps: {probed['train_seconds']:.1f} s training + {probed['score_seconds']:.1f} s "
          f"scoring {probed['n_texts']} texts; method / 10,000-step run: {share['share_one_device']:.1%} on one device, "
          f"{share[f'wall_share_{DEVICES}_devices']:.1%} of the wall time on {DEVICES}", flush=True)
    scored = scoring(args)
    print(f"scoring {scored['n_texts']} texts: batched {scored['texts_per_s']['batched']:.1f} texts/s, one at a time "
          f"{scored['texts_per_s']['one_at_a_time']:.1f} ({scored['ratio_batched_over_one_at_a_time']:.1f}x); "
          f"max |diff| {scored['max_abs_diff_nats']:.2e} nats", flush=True)
    settings = {"mode": "cpu-smoke" if args.cpu_smoke else "cuda", "model": sizes(args)[0], "data": sizes(args)[1],
                "warmup_steps": args.warmup, "timed_steps": args.steps, "precision": args.precision,
                "compile": args.compile, "fused_adamw": args.device == "cuda", "probe_steps_timed": args.probe_steps}
    memory = {part: r["max_memory_allocated_mib"] for part, r in
              (("lightning", train["lightning"]), ("plain", train["plain"]), ("probe", probed), ("scoring", scored))}
    payload = {"settings": settings, "training": train, "probe": probed, "plan": plan, "method_share": share,
               "scoring": scored, "peak_gpu_memory_mib": memory, "total_seconds": time.perf_counter() - start}
    path = write_result("gpu_check_cpu_smoke" if args.cpu_smoke else "gpu_check", payload, args.out)
    print(f"total {payload['total_seconds']:.0f} s; results: {path}")


if __name__ == "__main__":
    main()
