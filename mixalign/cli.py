"""`mixalign` command line: LightningCLI (fit, validate, test, predict) plus mixalign's own subcommands.

Every subcommand reads the same YAML config (`--config configs/pile.yaml`) and accepts the same
dotted overrides (`--data.weights natural`, `--trainer.max_steps 100`).
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Optional

import torch
from jsonargparse import ArgumentParser
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mixalign.callbacks.kl import LogLikelihoodKL
from mixalign.data.datamodule import PileMixtureDataModule
from mixalign.io import atomic_checkpoint_io, claim_version
from mixalign.llvec.estimators import estimate_kl
from mixalign.llvec.plots import save_model_map
from mixalign.llvec.scoring import load_scorer
from mixalign.llvec.textset import load_textset, resolve_textset, subset_textset
from mixalign.llvec.vectors import check_same_textset, load_vector, save_vector, vector_from_scores
from mixalign.mixture.aligned import MixtureConfig, align, write_weights
from mixalign.model.checkpoint import read_checkpoint
from mixalign.model.module import NanoGPTModule

EXTRA_SUBCOMMANDS = {
    "prepare": "--config CONFIG: tokenize the config's data once into the cache (fit/validate reuse it)",
    "weights": "--config CONFIG --out WEIGHTS.yaml: domain weights aligned with mixture.target (probes + solver)",
    "score": "--model CKPT|HF_DIR --out VEC.npz: log-likelihood vector of a model on a text set",
    "kl": "VEC.npz VEC.npz [...]: pairwise KL (bits/byte) with standard errors; a model map for 3+",
}


class MixalignCLI(LightningCLI):
    def __init__(self, args=None, run: bool = True, **kwargs):
        super().__init__(
            NanoGPTModule,
            PileMixtureDataModule,
            seed_everything_default=1337,
            save_config_kwargs={"overwrite": True},
            parser_kwargs=_parser_kwargs(run),
            args=args,
            run=run,
            **kwargs,
        )

    def before_instantiate_classes(self) -> None:
        """An unset trainer.precision becomes bf16-mixed where the run gets a bf16-capable GPU."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.get("trainer")
        if trainer is not None and trainer.get("precision") is None:
            trainer["precision"] = default_precision(trainer.get("accelerator"))

    def instantiate_trainer(self, **kwargs):
        """Atomic checkpoint writes, and a TensorBoard version claimed before anything is logged."""
        trainer = super().instantiate_trainer(**kwargs)
        if trainer.strategy.checkpoint_io.__class__ is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = atomic_checkpoint_io()
        for logger in trainer.loggers:
            claim = self.subcommand is not None and trainer.is_global_zero  # prepare/weights log nothing
            if claim and isinstance(logger, TensorBoardLogger) and logger._version is None:
                logger._version = claim_version(logger.root_dir, logger._get_next_version())
        return trainer

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True})
        parser.add_dataclass_arguments(MixtureConfig, "mixture")

    def mixture_config(self) -> MixtureConfig:
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        return config["mixture"]

    def fit(self, model: NanoGPTModule, datamodule: PileMixtureDataModule, ckpt_path: str | None = None, **kwargs):
        """Train; with `mixture.target` set, compute the weights first, and again at each round.

        Each round is its own `trainer.fit` segment that resumes from the previous segment's
        checkpoint, so optimizer, schedule and data stream continue exactly as in one run.
        """
        mixture = self.mixture_config()
        trainer = self.trainer
        if mixture.target is None:
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, **kwargs)
        else:
            self._fit_rounds(mixture, model, datamodule, ckpt_path, **kwargs)
        self._print_summary(datamodule)

    def _print_summary(self, datamodule: PileMixtureDataModule) -> None:
        """One line a person can read at the end of a run: the distance moved, on what mixture."""
        if not self.trainer.is_global_zero:
            return
        kl = next((c for c in self.trainer.callbacks if isinstance(c, LogLikelihoodKL)), None)
        weights = ", ".join(f"{d} {w:.3f}" for d, w in zip(datamodule.domains, datamodule.weights))
        if kl is not None and kl.kl_history:
            (start_step, start), (end_step, end) = kl.kl_history[0], kl.kl_history[-1]
            print(f"SUMMARY: KL to target {start:.4f} -> {end:.4f} bits/byte (step {start_step} -> {end_step}); "
                  f"weights: {weights}")
        else:
            print(f"SUMMARY: trained to step {self.trainer.global_step}; weights: {weights}")

    def _fit_rounds(self, mixture: MixtureConfig, model, datamodule, ckpt_path, **kwargs) -> None:
        trainer = self.trainer
        total = trainer.max_steps
        if total <= 0:
            raise ValueError("trainer.max_steps must be set when mixture.target is set (rounds split it)")
        bounds = [round(total * r / mixture.rounds) for r in range(mixture.rounds + 1)]
        model.hparams.lr_decay_steps = model.hparams.lr_decay_steps or total  # one schedule over all rounds
        step = 0
        if ckpt_path:
            ckpt_path = self._resolve_ckpt_path(ckpt_path)
            step = read_checkpoint(ckpt_path)["global_step"]
        for round_index, (begin, end) in enumerate(zip(bounds, bounds[1:])):
            if end <= step:
                continue
            if step == begin:  # this round starts now: probe from the current weights
                if ckpt_path:
                    model.load_state_dict(read_checkpoint(ckpt_path)["state_dict"])
                result = align(mixture, model, datamodule, main_steps=end - begin, grad_clip=trainer.gradient_clip_val)
                datamodule.pin_weights(begin, dict(zip(result.domains, result.weights)))
                self._report_mixture(result, round_index, begin)
            trainer.fit_loop.epoch_loop.max_steps = end
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, **kwargs)
            if end < total:
                ckpt_path = str(Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints" / f"round-{round_index}.ckpt")
                trainer.save_checkpoint(ckpt_path)
            step = end

    def _resolve_ckpt_path(self, ckpt_path: str) -> str:
        if ckpt_path == "last":
            dirpath = self.trainer.checkpoint_callback.dirpath if self.trainer.checkpoint_callback else None
            if not dirpath or not (Path(dirpath) / "last.ckpt").exists():
                raise ValueError(f"--ckpt_path last: no last.ckpt in checkpoint.dirpath ({dirpath})")
            return str(Path(dirpath) / "last.ckpt")
        return ckpt_path

    def _report_mixture(self, result, round_index: int, step: int) -> None:
        print(f"\nmixture for round {round_index} (from step {step}):\n{result.table()}\n")
        logger = self.trainer.logger
        if logger is not None:
            logger.log_metrics({f"mixture/weight/{d}": float(w) for d, w in zip(result.domains, result.weights)}, step)
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("mixture/diagnostics", f"round {round_index}\n\n    " + result.table().replace("\n", "\n    "), step)


def default_precision(accelerator) -> str:
    """bf16-mixed where the run gets a GPU with bf16 (tensor-core speed, float32 range), else 32-bit."""
    gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true"


def _parser_kwargs(run: bool) -> dict:
    epilog = "mixalign's own subcommands:\n" + "\n".join(
        f"  mixalign {name} {what}" for name, what in EXTRA_SUBCOMMANDS.items()
    )
    kwargs = {"epilog": epilog}
    return {"fit": kwargs, "validate": kwargs, "test": kwargs, "predict": kwargs, **kwargs} if run else kwargs


def prepare_main(args: list[str]) -> None:
    """`mixalign prepare --config ...`: run data preparation alone and print what was prepared."""
    cli = MixalignCLI(args=args, run=False)
    datamodule = cli.datamodule
    datamodule.setup("fit")
    manifest = datamodule.data.manifest
    print(f"prepared data: {datamodule.data.root}")
    print(f"{'domain':<24} {'train docs':>10} {'train tokens':>13} {'val docs':>9} {'val tokens':>11}")
    for domain, splits in manifest["domains"].items():
        train, val = splits["train"], splits["val"]
        print(f"{domain:<24} {train['documents']:>10} {train['tokens']:>13} {val['documents']:>9} {val['tokens']:>11}")
    print(json.dumps({"tokenizer": manifest["tokenizer"]["spec"], "dtype": manifest["dtype"]}))


def weights_main(args: list[str]) -> None:
    """`mixalign weights --config ... --out weights.yaml`: compute the aligned weights alone."""
    out = _pop_option(args, "--out")
    if out is None:
        raise ValueError("mixalign weights: --out PATH is required (the weights YAML to write)")
    cli = MixalignCLI(args=args, run=False)
    trainer = cli.trainer
    result = align(cli.mixture_config(), cli.model, cli.datamodule, trainer.max_steps, trainer.gradient_clip_val)
    png = write_weights(result, out)
    print(result.table())
    print(f"weights written to {out} (bar chart {png}); train on them with --data.weights {out}")


def _pop_option(args: list[str], name: str) -> str | None:
    """Remove `name VALUE` / `name=VALUE` from args (options LightningCLI's parser does not know)."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
            del args[i : i + 2]
            return value
        if arg.startswith(name + "="):
            del args[i]
            return arg.split("=", 1)[1]
    return None


def score_main(args: list[str]) -> None:
    """`mixalign score`: one model's log-likelihood vector on a text set, written atomically."""
    parser = ArgumentParser(prog="mixalign score", description=score_main.__doc__)
    parser.add_argument("--model", required=True, help="mixalign checkpoint (.ckpt) or local Hugging Face model dir")
    parser.add_argument("--textset", default="demo", help="'demo' (shipped) or a text-set file")
    parser.add_argument("--n_texts", type=Optional[int], default=None, help="score an evenly spaced subset")
    parser.add_argument("--out", required=True, help="output .npz")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max_batch_tokens", type=Optional[int], default=None, help="default: by device")
    cfg = parser.parse_args(args)
    textset = load_textset(resolve_textset(cfg.textset))
    textset = subset_textset(textset, cfg.n_texts) if cfg.n_texts else textset
    scorer = load_scorer(cfg.model, device=cfg.device)
    result = scorer.score(textset, max_batch_tokens=cfg.max_batch_tokens, progress=True)
    vector = vector_from_scores(result, textset, scorer.description)
    save_vector(vector, cfg.out)
    print(
        f"{cfg.out}: {len(vector.values)} texts, mean log-likelihood {vector.values.mean():.2f} nats/text "
        f"({-vector.values.mean() / vector.mean_bytes / math.log(2):.4f} bits/byte), text set {vector.textset_hash[:12]}"
        + (f"; {result.n_windowed} texts longer than the context were scored in sliding windows" if result.n_windowed else "")
    )


def kl_main(args: list[str]) -> None:
    """`mixalign kl`: pairwise KL between saved vectors (bits/byte, symmetric estimate, +- standard error)."""
    parser = ArgumentParser(prog="mixalign kl", description=kl_main.__doc__)
    parser.add_argument("vectors", nargs="+", help="two or more .npz vectors on the same text set")
    parser.add_argument("--clip_quantile", type=Optional[float], default=None)
    parser.add_argument("--map", default="model_map.png", help="model map PNG (written for 3+ vectors)")
    cfg = parser.parse_args(args)
    if len(cfg.vectors) < 2:
        parser.error("give at least two vectors")
    vectors = [load_vector(path) for path in cfg.vectors]
    check_same_textset(*vectors)
    names = [Path(path).stem for path in cfg.vectors]
    width = max(12, *map(len, names))
    print(f"KL in bits/byte +- standard error, text set {vectors[0].textset_hash[:12]}, N = {len(vectors[0].values)}")
    print(" " * width + "".join(f" {name:>{width + 10}}" for name in names))
    for name_a, a in zip(names, vectors):
        cells = []
        for b in vectors:
            e = estimate_kl(torch.from_numpy(a.values), torch.from_numpy(b.values), a.mean_bytes, cfg.clip_quantile)
            cells.append(f"{e.kl_bits_per_byte:.4f} +- {e.se_bits_per_byte:.4f}")
        print(f"{name_a:<{width}}" + "".join(f" {cell:>{width + 10}}" for cell in cells))
    if len(vectors) >= 3:
        save_model_map(vectors, names, cfg.map)
        print(f"model map: {cfg.map}")


SUBCOMMAND_MAINS = {"prepare": prepare_main, "weights": weights_main, "score": score_main, "kl": kl_main}


def main(args: list[str] | None = None) -> None:
    """Run a subcommand; a user error (bad config, data, checkpoint) is one clear line and exit code 2.

    Set MIXALIGN_DEBUG=1 to see the traceback instead.
    """
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if argv and argv[0] in SUBCOMMAND_MAINS:
            sys.argv = [f"{sys.argv[0]} {argv[0]}"]  # the subcommand parses its own arguments
            return SUBCOMMAND_MAINS[argv[0]](argv[1:])
        MixalignCLI(args=args)
    except (ValueError, FileNotFoundError) as error:  # DataError is a ValueError
        if os.environ.get("MIXALIGN_DEBUG"):
            raise
        print(f"mixalign: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
