"""`mixalign` command line: LightningCLI's fit and validate, plus mixalign's own subcommands.

Every subcommand reads the same YAML configs (`--config configs/pile.yaml`) and accepts the same
dotted overrides (`--data.weights natural`, `--trainer.max_steps 100`). A user error (a config
field, a file, a value) is one line on stderr and exit code 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from jsonargparse import DefaultHelpFormatter
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from mixalign.callbacks.kl import LogLikelihoodKL
from mixalign.callbacks.mixture import AUTOCAST, AlignedMixture
from mixalign.callbacks.progress import StepProgressBar
from mixalign.data.datamodule import PileMixtureDataModule
from mixalign.errors import MixalignError
from mixalign.io import atomic_checkpoint_io, claim_version
from mixalign.mixture.method import align
from mixalign.mixture.probes import ONE_PROCESS, Ranks, gather_objects
from mixalign.mixture.result import write_weights
from mixalign.mixture.rounds import round_end, round_starts
from mixalign.model.module import NanoGPTModule
from mixalign.paths import anchored

LOGS = "lightning_logs"


class LineBreakFormatter(DefaultHelpFormatter):
    """Keep the line breaks of descriptions and epilogs (the subcommand list) instead of reflowing them."""

    def _fill_text(self, text, width, indent):
        return "".join(indent + line for line in text.splitlines(keepends=True))


class MixalignCLI(LightningCLI):
    """LightningCLI with mixalign's sections: `checkpoint:`, `mixture:` (the target and the method)
    and `kl:` (the distance monitor, aimed at `mixture.target`).

    command: the mixalign subcommand this parser serves without running the trainer (``weights``).
    """

    def __init__(self, args=None, run: bool = True, command: str | None = None):
        self.command = command
        super().__init__(
            NanoGPTModule, PileMixtureDataModule, seed_everything_default=1337, save_config_kwargs={"overwrite": True},
            parser_kwargs=_parser_kwargs(run, command), args=args, run=run, auto_configure_optimizers=False,
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {key: value for key, value in LightningCLI.subcommands().items() if key in ("fit", "validate")}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.block_size", "model.block_size")  # one value, one place
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True})
        parser.add_lightning_class_args(AlignedMixture, "mixture")
        parser.add_lightning_class_args(LogLikelihoodKL, "kl")
        parser.link_arguments("mixture.target", "kl.target")
        parser.link_arguments("mixture.textset", "kl.textset")
        if self.command == "weights":
            parser.add_argument("--out", required=True, help="the weights YAML to write (a bar chart PNG goes beside it)")

    def _subcommand_config(self):
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        """Paths become absolute strings; an unset precision becomes bf16-mixed on a bf16 GPU;
        `--ckpt_path last` finds this run's last.ckpt."""
        anchored(self.config)  # relative paths were resolved from the directory of the config naming them
        config = self._subcommand_config()
        trainer = config["trainer"]
        if trainer.get("precision") is None:
            trainer["precision"] = default_precision(trainer.get("accelerator"))
        if self.subcommand and config.get("ckpt_path") == "last":
            config["ckpt_path"] = str(find_last_checkpoint(trainer.get("default_root_dir") or ".",
                                                           config["checkpoint"].get("dirpath")))

    def instantiate_trainer(self, **kwargs):
        """Atomic checkpoint writes, and a TensorBoard version of its own (or the resumed run's)."""
        trainer_config = self._get(self.config_init, "trainer", default={})
        if trainer_config.get("plugins") is None:
            kwargs["plugins"] = [atomic_checkpoint_io()]
        callbacks = list(trainer_config.get("callbacks") or [])
        if trainer_config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            kwargs["callbacks"] = callbacks + [StepProgressBar()]
        if self.subcommand and trainer_config.get("logger") in (None, True) and _is_rank_zero():
            root = Path(trainer_config.get("default_root_dir") or ".")
            resumed = self._subcommand_config().get("ckpt_path") if self.subcommand == "fit" else None
            kwargs["logger"] = TensorBoardLogger(root, name=LOGS, version=run_version(root / LOGS, resumed))
        return super().instantiate_trainer(**kwargs)

    def fit(self, model: NanoGPTModule, datamodule: PileMixtureDataModule, **kwargs) -> None:
        self.trainer.fit(model, datamodule=datamodule, **kwargs)
        if self.trainer.is_global_zero:
            print(f"SUMMARY: {summary(self.trainer, datamodule)}")


def _is_rank_zero() -> bool:
    """Before the trainer exists, the launcher's environment says which process this is."""
    import os

    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def find_last_checkpoint(root: str, dirpath: str | None) -> Path:
    """`last.ckpt` of `checkpoint.dirpath`, or of this log directory's newest run; an error when none."""
    if dirpath:
        candidates = [Path(dirpath) / "last.ckpt"]
    else:
        candidates = sorted(Path(root).glob(f"{LOGS}/version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    found = [p for p in candidates if p.is_file()]
    if not found:
        where = Path(dirpath) if dirpath else Path(root) / LOGS / "version_*" / "checkpoints"
        raise MixalignError(f"--ckpt_path last: no last.ckpt in {where}; there is nothing to resume "
                            "(start without --ckpt_path, or give the checkpoint's path)")
    return found[-1]


def run_version(logs: Path, ckpt_path: str | None) -> int:
    """The resumed run's version when ckpt_path lies in one (its curves continue), else a new one,
    claimed at once (its directory made) so two runs started together never share it."""
    if ckpt_path:
        path = Path(ckpt_path).resolve()
        for parent in path.parents:
            if parent.parent == logs.resolve() and parent.name.startswith("version_"):
                return int(parent.name.removeprefix("version_"))
    existing = [int(p.name.removeprefix("version_")) for p in logs.glob("version_*") if p.name[8:].isdigit()]
    return claim_version(logs, max(existing, default=-1) + 1)


def summary(trainer, datamodule: PileMixtureDataModule) -> str:
    """One line a person can read at the end of a run: each distance moved, on which mixture."""
    weights = ", ".join(f"{d} {w:.3f}" for d, w in zip(datamodule.domains, datamodule.weights))
    parts = []
    kl = next((c for c in trainer.callbacks if isinstance(c, LogLikelihoodKL) and c.active), None)
    if kl is not None and kl.measurements:
        parts.append(summary_distances(kl))
    else:
        parts.append(f"trained to step {trainer.global_step}")
    mixture = next((c for c in trainer.callbacks if isinstance(c, AlignedMixture)), None)
    if mixture is not None and mixture.summaries:
        parts.append(f"mixture {mixture.summary()}")
    return "; ".join(parts + [f"weights: {weights}"])


def summary_distances(kl: LogLikelihoodKL) -> str:
    """The first and last measurement of each distance the callback took, named for what it is."""
    first, last = kl.measurements[0], kl.measurements[-1]
    parts = [f"step {first.step} -> {last.step}"]
    if last.exact_model_to_target is not None:
        parts.append(f"KL to target, exact on the text set: model->target {first.exact_model_to_target:.4f} -> "
                     f"{last.exact_model_to_target:.4f}, target->model {first.exact_target_to_model:.4f} -> "
                     f"{last.exact_target_to_model:.4f} bits/byte")
    else:
        parts.append("KL to target, exact: not available (the target is not a model sharing the tokenizer)")
    for name, result in kl.monte_carlo.items():
        parts.append(f"Monte Carlo KL {name.replace('_to_', '->')} {result.text.bits_per_byte:.4f} +- {result.text.se:.4f}")
    parts.append(f"log-likelihood-vector distance (Kishino et al. scale) {first.llvec_distance:.4f} -> "
                 f"{last.llvec_distance:.4f}")
    return "; ".join(parts)


def default_precision(accelerator) -> str:
    """bf16-mixed where the run gets a GPU with bf16 (tensor-core speed, float32 range), else 32-bit."""
    gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true"


def _parser_kwargs(run: bool, command: str | None) -> dict:
    from mixalign.commands import SUBCOMMANDS

    if not run:
        return {"prog": f"mixalign {command}", "description": SUBCOMMANDS[command].description,
                "formatter_class": LineBreakFormatter}
    epilog = "mixalign's own subcommands (each has --help):\n" + "\n".join(
        f"  mixalign {name:<8} {entry.summary}" for name, entry in SUBCOMMANDS.items())
    kwargs = {"epilog": epilog, "formatter_class": LineBreakFormatter}
    return {"prog": "mixalign", **kwargs, "fit": dict(kwargs, prog="mixalign fit"),
            "validate": dict(kwargs, prog="mixalign validate")}


def weights_main(args: list[str]) -> None:
    """`mixalign weights --config C --out weights.yaml`: the first round's mixture, without training."""
    cli = MixalignCLI(args=args, run=False, command="weights")
    mixture, trainer = cli.config_init["mixture"], cli.trainer
    if mixture.warmup_steps:
        raise MixalignError("mixture.warmup_steps > 0: the mixture depends on the warm-up training, which is the "
                            "run's own first steps; run `mixalign fit` (the weights land in the run directory)")
    if Path(cli.config["out"]).is_dir():  # before the probes, not after them
        raise MixalignError(f"--out {cli.config['out']}: is a directory; name the weights file (.yaml) to write")
    starts = round_starts(trainer.max_steps, mixture.rounds, 0)
    ranks = weights_ranks(trainer)
    if ranks.world > 1:  # one process per node tokenizes the data; the others wait and read its cache
        if trainer.local_rank == 0:
            cli.datamodule.prepare_data()
        trainer.strategy.barrier("mixalign weights: data prepared")
    result = align(mixture, cli.model, cli.datamodule, 0, round_end(starts, 0, trainer.max_steps), trainer.max_steps,
                   trainer.gradient_clip_val, device=str(trainer.strategy.root_device),
                   autocast=AUTOCAST.get(str(trainer.precision)), ranks=ranks,
                   accumulate=trainer.accumulate_grad_batches)
    if not trainer.is_global_zero:
        return  # rank 0 writes the file; every rank holds the same result
    out = cli.config["out"]
    png = write_weights(result, out)
    print(result.table())
    rounds = f" (round 0 of {mixture.rounds}: later rounds are computed during fit)" if mixture.rounds > 1 else ""
    print(f"weights written to {out}{rounds} (bar chart {png}); train on them with --data.weights {out}")


def weights_ranks(trainer) -> Ranks:
    """This process among those torchrun or SLURM launched for `mixalign weights`: the trainer's own
    strategy sets up the process group (as in fit), so the probes are dealt across the processes."""
    if trainer.world_size == 1:
        return ONE_PROCESS
    if not trainer.strategy.cluster_environment.creates_processes_externally:
        raise MixalignError(f"mixalign weights on {trainer.world_size} devices needs its processes launched by "
                            "torchrun or SLURM (torchrun --nproc_per_node N -m mixalign weights ... --trainer.devices N "
                            "--trainer.strategy ddp), or --trainer.devices 1")
    trainer.strategy.setup_environment()
    return Ranks(trainer.global_rank, trainer.world_size, gather_objects)


def main(args: list[str] | None = None) -> None:
    """Run a subcommand; a user error (`MixalignError`) is one clear line and exit code 2."""
    from mixalign.commands import SUBCOMMANDS

    argv = list(sys.argv[1:] if args is None else args)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            return SUBCOMMANDS[argv[0]].main(argv[1:])
        MixalignCLI(args=args)
    except MixalignError as error:
        print(f"mixalign: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
