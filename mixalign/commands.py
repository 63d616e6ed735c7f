"""mixalign's own subcommands beside LightningCLI's fit and validate: each a parser and a main.

`mixalign prepare`, `weights`, `score`, `kl`, `textset`, `sample` and `export`; `mixalign --help` lists them
and each has its own `--help`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from jsonargparse import ActionConfigFile, ArgumentParser

from mixalign.data.datamodule import PileMixtureDataModule
from mixalign.data.tokenizer import EOT
from mixalign.errors import MixalignError
from mixalign.io import write_bytes_atomic
from mixalign.llvec.compare import Measured, pair_distances
from mixalign.llvec.models import load_model
from mixalign.llvec.montecarlo import sample_sequences
from mixalign.llvec.plots import save_model_map
from mixalign.llvec.textset import (
    FEW_TEXTS,
    build_textset,
    load_textset,
    resolve_textset,
    save_textset,
    subset_textset,
)
from mixalign.llvec.vectors import (
    check_same_textset,
    load_vector,
    save_vector,
    vector_from_scores,
)
from mixalign.model.checkpoint import load_gpt
from mixalign.model.hf_gpt2 import save_hf_gpt2

OTHER_SECTIONS = ("seed_everything", "trainer", "model", "checkpoint", "mixture", "kl", "ckpt_path")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _parser(name: str, main: Callable) -> ArgumentParser:
    from mixalign.cli import LineBreakFormatter

    return ArgumentParser(prog=f"mixalign {name}", description=main.__doc__, formatter_class=LineBreakFormatter)


def _textset(spec: str, n_texts: int | None):
    textset = load_textset(resolve_textset(spec))
    return subset_textset(textset, n_texts) if n_texts else textset


def _data_parser(name: str, main: Callable) -> ArgumentParser:
    """`--config` and the `data:` section only; the config's other sections are read and ignored."""
    parser = _parser(name, main)
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="a mixalign config (its data: section is used)")
    parser.add_class_arguments(PileMixtureDataModule, "data")
    for section in OTHER_SECTIONS:
        parser.add_argument(f"--{section}", type=Optional[Any], default=None, help="(not used by this subcommand)")
    return parser


def prepare_main(args: list[str]) -> None:
    """Tokenize the config's data once into data.cache_dir (fit, validate and weights reuse it)."""
    cfg = _data_parser("prepare", prepare_main).parse_args(args)
    datamodule = PileMixtureDataModule(**cfg.data.as_dict())
    datamodule.prepare_data()
    datamodule.setup("fit")
    manifest = datamodule.data.manifest
    print(f"prepared data: {datamodule.data.root}")
    print(f"{'domain':<24} {'train docs':>10} {'train tokens':>13} {'val docs':>9} {'val tokens':>11}")
    for domain, splits in manifest["domains"].items():
        train, val = splits["train"], splits["val"]
        print(f"{domain:<24} {train['documents']:>10} {train['tokens']:>13} {val['documents']:>9} {val['tokens']:>11}")
    print(f"tokenizer: {manifest['tokenizer']['spec']}, token dtype: {manifest['dtype']}")


def textset_main(args: list[str]) -> None:
    """A text set from the config's data with the papers' protocol: chunks of documents held out of
    training (data.split_seed, data.val_fraction), drawn with a seed; written atomically."""
    parser = _data_parser("textset", textset_main)
    parser.add_argument("--out", required=True, help="output text set (.jsonl or .jsonl.zst)")
    parser.add_argument("--n", type=int, default=1000, help="how many texts (the papers used 10,000 Pile chunks)")
    parser.add_argument("--textset_seed", type=int, default=0, help="fixes which chunks are drawn")
    parser.add_argument("--stratify", type=bool, default=True, help="as equal a share per domain as availability allows")
    parser.add_argument("--max_bytes", type=int, default=1024, help="documents are cut into chunks of at most this")
    parser.add_argument("--min_bytes", type=int, default=256, help="only chunks longer than this are kept")
    cfg = parser.parse_args(args)
    textset = build_textset(cfg.data.source, cfg.n, cfg.textset_seed, cfg.data.split_seed,
                            cfg.data.val_fraction, cfg.data.domains, cfg.stratify, cfg.max_bytes, cfg.min_bytes)
    path = save_textset(textset, cfg.out)
    print(f"{path}: N = {len(textset)} texts, B = {textset.mean_bytes:.1f} bytes, hash {textset.hash[:12]}")
    print(f"{'domain':<24} {'texts':>6} {'candidates':>11}")
    for domain, count in textset.domain_counts().items():
        print(f"{domain:<24} {count:>6} {textset.meta['available'].get(domain, 0):>11}")
    if few := textset.scarce_domains(textset.meta["available"]):
        print(f"warning: fewer than {FEW_TEXTS} texts from {', '.join(few)}: per-domain figures there are noise, "
              "and the mixture method barely sees those domains (lower --min_bytes or add held-out data)")
    print(f"use it with --mixture.textset {path}")


def score_main(args: list[str]) -> None:
    """One model's log-likelihood vector on a text set, written atomically as .npz."""
    parser = _parser("score", score_main)
    parser.add_argument("--model", required=True, help="mixalign checkpoint (.ckpt) or local Hugging Face model dir")
    parser.add_argument("--textset", default="demo", help="'demo' (shipped) or a text-set file")
    parser.add_argument("--n_texts", type=Optional[int], default=None, help="score an evenly spaced subset")
    parser.add_argument("--out", required=True, help="output .npz")
    parser.add_argument("--device", default=default_device(), help="default: cuda where there is a GPU")
    parser.add_argument("--max_batch_tokens", type=Optional[int], default=None, help="default: by device")
    cfg = parser.parse_args(args)
    textset = _textset(cfg.textset, cfg.n_texts)
    model = load_model(cfg.model, device=cfg.device)
    result = model.score(textset, max_batch_tokens=cfg.max_batch_tokens, progress=f"scoring {Path(cfg.model).name}")
    vector = vector_from_scores(result, textset, model.description)
    save_vector(vector, cfg.out)
    print(
        f"{cfg.out}: {len(vector.values)} texts, mean log-likelihood {vector.values.mean():.2f} nats/text "
        f"({-vector.values.mean() / vector.mean_bytes / math.log(2):.4f} bits/byte), text set {vector.textset_hash[:12]}"
        + (f"; {result.n_windowed} texts longer than the context were scored in sliding windows" if result.n_windowed else "")
    )


def _measured(spec: str, textset, device: str, max_batch_tokens) -> Measured:
    """A `.npz` vector as it is; a model (checkpoint or HF directory) loaded and scored on the text set."""
    if spec.endswith(".npz"):
        return Measured(Path(spec).stem, load_vector(spec))
    model = load_model(spec, device=device)
    result = model.score(textset, max_batch_tokens=max_batch_tokens, progress=f"scoring {Path(spec).name}")
    return Measured(Path(spec).name, vector_from_scores(result, textset, model.description), model)


def _cell(value) -> str:
    if value is None:
        return "-"
    if hasattr(value, "text"):  # MonteCarloKL: the text-level figure
        value = value.text
    if hasattr(value, "kl_bits_per_byte"):  # the vector estimate
        return f"{value.kl_bits_per_byte:.4f} +- {value.se_bits_per_byte:.4f}"
    return f"{value.bits_per_byte:.4f} +- {value.se:.4f}"


def _print_pairs(pairs, first, mc: int) -> None:
    print(f"bits/byte +- standard error; text set {first.textset_hash[:12]}, N = {len(first)}, B = {first.mean_bytes:.1f} bytes")
    print("  llvec: log-likelihood-vector distance (Kishino et al. scale; symmetric; not a calibrated KL)")
    print("  exact a->b: KL(a || b), exact on the text set (models sharing a tokenizer)")
    print(f"  mc a->b: Monte Carlo KL(a || b) from {mc} samples of a" if mc else "  mc: off (--mc N)")
    width = max(8, *(len(p.a) for p in pairs), *(len(p.b) for p in pairs))
    header = ["a", "b", "llvec", "exact a->b", "exact b->a", "mc a->b", "mc b->a"]
    rows = [[p.a, p.b] + [_cell(v) for v in (p.llvec, p.exact_a_to_b, p.exact_b_to_a, p.mc_a_to_b, p.mc_b_to_a)]
            for p in pairs]
    for row in [header] + rows:
        print(f"{row[0]:<{width}} {row[1]:<{width}} " + " ".join(f"{cell:>18}" for cell in row[2:]))


def kl_main(args: list[str]) -> None:
    """Every distance between models or saved vectors, pair by pair, in bits/byte +- standard error:
    the log-likelihood-vector distance, exact KL both ways (models sharing a tokenizer) and, with
    --mc N, Monte Carlo KL both ways (any two models)."""
    parser = _parser("kl", kl_main)
    parser.add_argument("inputs", nargs="+", help="two or more: .npz vectors, mixalign checkpoints or local HF directories")
    parser.add_argument("--textset", default="demo", help="text set the models are scored on ('demo' or a file)")
    parser.add_argument("--n_texts", type=Optional[int], default=None, help="score an evenly spaced subset")
    parser.add_argument("--mc", type=int, default=0, help="Monte Carlo KL from this many samples each way (0: none)")
    parser.add_argument("--mc_seed", type=int, default=1337, help="fixes the Monte Carlo samples")
    parser.add_argument("--device", default=default_device(), help="default: cuda where there is a GPU")
    parser.add_argument("--max_batch_tokens", type=Optional[int], default=None, help="default: by device")
    parser.add_argument("--map", type=Optional[str], default=None, help="also draw a model map PNG here (3+ inputs)")
    parser.add_argument("--out", type=Optional[str], default=None, help="write every figure, full precision, as JSON")
    cfg = parser.parse_args(args)
    if len(cfg.inputs) < 2:
        parser.error("give at least two vectors or models")
    textset = _textset(cfg.textset, cfg.n_texts) if any(not i.endswith(".npz") for i in cfg.inputs) else None
    measured = [_measured(item, textset, cfg.device, cfg.max_batch_tokens) for item in cfg.inputs]
    check_same_textset(*(m.vector for m in measured))
    pairs = [pair_distances(a, b, textset, cfg.mc, cfg.mc_seed, cfg.max_batch_tokens, progress=True)
             for i, a in enumerate(measured) for b in measured[i + 1:]]
    first = measured[0].vector
    _print_pairs(pairs, first, cfg.mc)
    if cfg.out:
        import json

        write_bytes_atomic(cfg.out, json.dumps({"textset_hash": first.textset_hash, "n_texts": len(first),
                                                "mean_bytes": first.mean_bytes, "mc_samples": cfg.mc,
                                                "pairs": [p.to_dict() for p in pairs]}, indent=1).encode())
        print(f"written: {cfg.out}")
    if cfg.map and len(measured) >= 3:
        save_model_map([m.vector for m in measured], [m.name for m in measured], cfg.map)
        print(f"model map: {cfg.map}")


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
    parser.add_argument("--seed", type=int, default=1337, help="fixes the samples")
    parser.add_argument("--device", default=default_device(), help="default: cuda where there is a GPU")
    parser.add_argument("--out", type=Optional[str], default=None, help="also write the samples as JSON lines")
    cfg = parser.parse_args(args)
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
        import json

        lines = [json.dumps({"text": t, "finished": bool(f), "seed": cfg.seed, "index": i})
                 for i, (t, f) in enumerate(zip(texts, samples.finished))]
        write_bytes_atomic(cfg.out, ("\n".join(lines) + "\n").encode())
        print(f"written: {cfg.out}")


def export_main(args: list[str]) -> None:
    """A mixalign checkpoint as a Hugging Face GPT-2 directory (config.json, model.safetensors, and
    its tokenizer as a PreTrainedTokenizerFast with the end-of-text token) that transformers, lm-eval
    and vLLM load: GPT2LMHeadModel computes the same log-likelihoods (tests/test_hf_gpt2.py)."""
    parser = _parser("export", export_main)
    parser.add_argument("--ckpt", required=True, help="mixalign checkpoint (.ckpt)")
    parser.add_argument("--out", required=True, help="directory to write (absent or empty)")
    cfg = parser.parse_args(args)
    model, tokenizer_json = load_gpt(cfg.ckpt)
    if tokenizer_json is None:
        raise MixalignError(f"{cfg.ckpt}: no tokenizer is stored with this checkpoint, so it cannot be exported whole")
    save_hf_gpt2(model, tokenizer_json, EOT, cfg.out)
    print(f"written: {cfg.out} (transformers.AutoModelForCausalLM.from_pretrained reads it)")


def eval_main(args: list[str]) -> None:
    """Downstream task accuracy of the target and other models (mixalign checkpoints or Hugging Face
    directories) through lm-eval, offline: per task accuracy +- standard error, the gap to the target's
    accuracy +- paired standard error, and agreement with the target's choices; written as eval.json
    and eval.png. Needs the eval extra (pip install 'mixalign[eval]')."""
    from mixalign.downstream import (
        compare_to_target,
        evaluate_model,
        format_report,
        save_report,
        task_specs,
    )

    parser = _parser("eval", eval_main)
    parser.add_argument("--target", required=True, help="the target model (.ckpt or Hugging Face directory)")
    parser.add_argument("--models", nargs="+", required=True, help="models to compare with it (base, trained runs)")
    parser.add_argument("--tasks", nargs="+", default=["demo"],
                        help="'demo' (all shipped demo tasks), demo_<domain>, task YAML files, or lm-eval task names")
    parser.add_argument("--include_path", nargs="*", default=None, help="directories of your own lm-eval task YAMLs")
    parser.add_argument("--limit", type=Optional[int], default=None, help="first N items of each task (a quick look)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--device", default=default_device())
    parser.add_argument("--out", default="eval", help="directory for eval.json and eval.png")
    cfg = parser.parse_args(args)
    specs = {Path(m).stem if Path(m).suffix == ".ckpt" else Path(m).name: m for m in [cfg.target, *cfg.models]}
    if len(specs) != 1 + len(cfg.models):
        raise MixalignError("--target and --models: two models have the same name; give them distinct file names")
    tasks = task_specs(cfg.tasks)
    results = {name: evaluate_model(spec, tasks, cfg.device, cfg.batch_size, cfg.limit, cfg.include_path)
               for name, spec in specs.items()}
    report = compare_to_target(results, next(iter(specs)))
    print(format_report(report))
    json_path, png = save_report(report, Path(cfg.out))
    print(f"written: {json_path}, {png}")


@dataclass(frozen=True)
class Subcommand:
    main: Callable[[list[str]], None]
    summary: str

    @property
    def description(self) -> str:
        return self.main.__doc__


def _weights_main(args: list[str]) -> None:
    """The first round's aligned mixture without training: the probes, every candidate's measured
    distance, the choice; written as a weights YAML (train on it with --data.weights) and a bar chart."""
    from mixalign.cli import weights_main

    weights_main(args)


SUBCOMMANDS = {
    "prepare": Subcommand(prepare_main, "--config C: tokenize the config's data once into the cache"),
    "weights": Subcommand(_weights_main, "--config C --out W.yaml: the aligned mixture alone (probes, candidates)"),
    "score": Subcommand(score_main, "--model M --out V.npz: a model's log-likelihood vector on a text set"),
    "kl": Subcommand(kl_main, "A B [...]: vector distance, exact KL, (--mc N) Monte Carlo KL between models"),
    "textset": Subcommand(textset_main, "--config C --out T.jsonl.zst: a held-out text set from the config's data"),
    "sample": Subcommand(sample_main, "--model M [--prompt P]: text from a model (temperature, top_k, seed)"),
    "export": Subcommand(export_main, "--ckpt X --out DIR: a checkpoint as a Hugging Face GPT-2 directory"),
    "eval": Subcommand(eval_main, "--target T --models M [...]: downstream task accuracy and gap (lm-eval)"),
}
