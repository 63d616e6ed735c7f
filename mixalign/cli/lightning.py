"""LightningCLI with mixalign's sections, and what a run prints and resumes from.

The parser's help texts (the subcommand list, a subcommand's description) come from the caller,
so this module knows nothing of the subcommand table above it.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from mixalign.callbacks.dashboard import Dashboard, DashboardLogger
from mixalign.callbacks.interrupt import SaveOnInterrupt
from mixalign.callbacks.kl import LogLikelihoodKL
from mixalign.callbacks.mixture import AlignedMixture
from mixalign.callbacks.ownership import OwnCheckpointDir
from mixalign.callbacks.progress import PlainProgress, StepProgressBar
from mixalign.cli.parsing import LineBreakFormatter, OneLineErrors
from mixalign.cli.summary import summary_line, write_summary
from mixalign.data.datamodule import PileMixtureDataModule
from mixalign.errors import MixalignError
from mixalign.io import atomic_checkpoint_io, claim_version
from mixalign.model.checkpoint import read_checkpoint
from mixalign.model.module import NanoGPTModule
from mixalign.paths import anchored
from mixalign.units import DEFAULT_SEED

LOGS = "lightning_logs"


class AnchoredParser(OneLineErrors, LightningArgumentParser):
    """A parser whose dumps name every input path absolutely: `--print_config > my.yaml`, like the run's
    saved config.yaml, then works as `--config my.yaml` from any directory; its errors are one line."""

    def dump(self, cfg, *args, **kwargs) -> str:
        return super().dump(anchored(cfg.clone()), *args, **kwargs)


class MixalignCLI(LightningCLI):
    """LightningCLI with mixalign's sections: `checkpoint:`, `mixture:` (the target and the method)
    and `kl:` (the distance monitor, aimed at `mixture.target`).

    command: the mixalign subcommand this parser serves without running the trainer (``weights``).
    description, epilog: the help texts, kept line by line (epilog: also on fit's and validate's).
    """

    def __init__(self, args=None, run: bool = True, command: str | None = None, description: str | None = None,
                 epilog: str | None = None):
        self.command = command
        super().__init__(
            NanoGPTModule, PileMixtureDataModule, seed_everything_default=DEFAULT_SEED,
            save_config_kwargs={"overwrite": True}, parser_kwargs=parser_kwargs(command, description, epilog),
            parser_class=AnchoredParser,
            args=args, run=run, auto_configure_optimizers=False,
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

    def subcommand_section(self, config):
        """The part of a parsed config that belongs to the subcommand run (fit, validate), or all of it."""
        return config[self.subcommand] if self.subcommand else config

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """Parse, then read a `--ckpt_path` file and compare it with the configured model, before
        Lightning reads it (with a raw traceback for a bad file) and puts its hyper-parameters in
        place of the configured ones."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand and self.config[subcommand].get("ckpt_path") not in (None, "last"):
            self.resume_hparams, self.resume_data = resume_hparams(self.config[subcommand]["ckpt_path"],
                                                                   self.config[subcommand]["model"])

    def before_instantiate_classes(self) -> None:
        """Paths become absolute strings; an unset precision becomes bf16-mixed on a bf16 GPU;
        `--ckpt_path last` finds this run's last.ckpt (checked as any `--ckpt_path` is)."""
        anchored(self.config)  # relative paths were resolved from the directory of the config naming them
        config = self.subcommand_section(self.config)
        trainer = config["trainer"]
        if trainer.get("precision") is None:
            trainer["precision"] = default_precision(trainer.get("accelerator"))
        if self.subcommand and config.get("ckpt_path") == "last":
            config["ckpt_path"] = str(find_last_checkpoint(trainer.get("default_root_dir") or ".",
                                                           config["checkpoint"].get("dirpath")))
            self.resume_hparams, self.resume_data = resume_hparams(config["ckpt_path"], config["model"])

    def after_instantiate_classes(self) -> None:
        """The vocabulary, known once the data's tokenizer is, must be the resumed checkpoint's too; a
        resumed fit must be configured with its run's data stream."""
        super().after_instantiate_classes()
        resumed = getattr(self, "resume_hparams", None)
        if resumed is not None and self.subcommand:
            config = self.subcommand_section(self.config)
            check_resume_architecture(config["ckpt_path"], resumed, {"vocab_size": self.model.hparams.vocab_size})
            if self.subcommand == "fit" and self.resume_data is not None:
                check_resume_data(config["ckpt_path"], self.resume_data, config["data"])

    def instantiate_trainer(self, **kwargs):
        """Atomic checkpoint writes, one run per checkpoint directory, a resumable checkpoint on SIGTERM,
        step progress (a bar in a terminal, plain lines in a log), the TensorBoard dashboard's layout and
        HPARAMS row, and a TensorBoard version of its own (or the resumed run's), without Lightning's
        placeholder hp_metric."""
        trainer_config = self.subcommand_section(self.config_init).get("trainer", {})
        if trainer_config.get("plugins") is None:
            kwargs["plugins"] = [atomic_checkpoint_io()]
        callbacks = list(trainer_config.get("callbacks") or [])
        if trainer_config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            every = trainer_config.get("log_every_n_steps") or 50
            callbacks.append(StepProgressBar() if sys.stdout.isatty() else PlainProgress(every))
        kwargs["callbacks"] = callbacks + [OwnCheckpointDir(), SaveOnInterrupt(), Dashboard()]
        if self.subcommand and trainer_config.get("logger") in (None, True) and _is_rank_zero():
            root = Path(trainer_config.get("default_root_dir") or ".")
            resumed = self.subcommand_section(self.config).get("ckpt_path") if self.subcommand == "fit" else None
            kwargs["logger"] = DashboardLogger(root, name=LOGS, version=run_version(root / LOGS, resumed),
                                               default_hp_metric=False)
        return super().instantiate_trainer(**kwargs)

    def fit(self, model: NanoGPTModule, datamodule: PileMixtureDataModule, **kwargs) -> None:
        """Train (a --ckpt_path is read as tensors only, whatever --weights_only says: no code in it runs), then
        the SUMMARY line, and summary.json with distances.png in the run directory."""
        try:
            self.trainer.fit(model, datamodule=datamodule, **{**kwargs, "weights_only": True})
        except MixalignError:  # a user error before anything was trained: its run folder holds nothing to keep
            if self.trainer.is_global_zero and self.trainer.logger is not None:
                drop_if_unused(Path(self.trainer.logger.log_dir))
            raise
        log_dir = self.trainer.log_dir  # a collective under DDP: every rank asks
        if self.trainer.is_global_zero:
            print(f"SUMMARY: {summary_line(self.trainer, datamodule)}")
            if log_dir:
                write_summary(self.trainer, datamodule, Path(log_dir))

    def validate(self, model: NanoGPTModule, datamodule: PileMixtureDataModule, **kwargs) -> None:
        """Validate (a --ckpt_path is read as tensors only, whatever --weights_only says)."""
        self.trainer.validate(model, datamodule=datamodule, **{**kwargs, "weights_only": True})


UNUSED_RUN_FILES = ("events.out.tfevents.*", "config.yaml", "hparams.yaml")  # what a run folder holds before training


def drop_if_unused(run_dir: Path) -> None:
    """Remove a run folder that holds only what a run writes before its first step (no checkpoint, no
    vectors, no mixture), so a failed start does not leave an empty version_N behind."""
    if not run_dir.is_dir():
        return
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    if all(any(p.match(pattern) for pattern in UNUSED_RUN_FILES) for p in files):
        shutil.rmtree(run_dir, ignore_errors=True)


def parser_kwargs(command: str | None, description: str | None, epilog: str | None) -> dict:
    """LightningCLI's parser_kwargs: mixalign's program names and the help texts given (kept line by line);
    a text not given keeps Lightning's default (its descriptions of the CLI, fit and validate)."""
    kwargs = {"formatter_class": LineBreakFormatter} | ({"epilog": epilog} if epilog is not None else {})
    main = kwargs | ({"description": description} if description is not None else {})
    if command:
        return {"prog": f"mixalign {command}", **main}
    return {"prog": "mixalign", **main, "fit": dict(kwargs, prog="mixalign fit"),
            "validate": dict(kwargs, prog="mixalign validate")}


def _is_rank_zero() -> bool:
    """Before the trainer exists, the launcher's environment says which process this is."""
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


RESUME_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")


def resume_hparams(ckpt_path: str, model) -> tuple[dict, dict | None]:
    """The model hyper-parameters of a checkpoint to resume or validate, and its data module's (None in
    a checkpoint without them), read without running code
    (weights_only), after comparing them with the configured `model` (all but the vocabulary, which
    comes from the data's tokenizer later): a clear error for a missing, unreadable, pickled or
    truncated file, and one naming the differing fields for another architecture."""
    if not Path(ckpt_path).is_file():
        what = "a directory, not a checkpoint file" if Path(ckpt_path).is_dir() else "no such file"
        raise MixalignError(f"--ckpt_path {ckpt_path}: {what}")
    try:
        checkpoint = read_checkpoint(ckpt_path, mmap=True)
    except MixalignError as error:
        raise MixalignError(f"--ckpt_path {error}") from None
    hparams, data = checkpoint.get("hyper_parameters"), checkpoint.get("datamodule_hyper_parameters")
    if not isinstance(hparams, dict) or any(f not in hparams for f in RESUME_FIELDS):
        raise MixalignError(f"--ckpt_path {ckpt_path}: the checkpoint's hyper-parameters lack some of "
                            f"{list(RESUME_FIELDS)}; not a checkpoint of a mixalign run")
    check_resume_architecture(ckpt_path, hparams, {f: model.get(f) for f in RESUME_FIELDS if f != "vocab_size"})
    return {f: hparams[f] for f in RESUME_FIELDS}, data if isinstance(data, dict) else None


STREAM_FIELDS = ("weights", "domains", "seed", "batch_size")  # what the resumed data stream and mixture follow


def check_resume_data(ckpt_path: str, resumed: dict, configured) -> None:
    """A resumed fit continues its run's data stream and mixture schedule (restored from the checkpoint):
    a config asking for other weights, domains, data seed or batch size would be silently ignored, so
    it is an error naming the fields."""
    different = [f"data.{f}: run {resumed[f]!r} vs config {configured.get(f)!r}" for f in STREAM_FIELDS
                 if f in resumed and configured.get(f) != resumed[f]]
    if different:
        raise MixalignError(f"--ckpt_path {ckpt_path}: resuming continues that run's data stream, but the config "
                            f"differs ({'; '.join(different)}); set them to the run's, or start a new run without "
                            "--ckpt_path (model.init_from takes the checkpoint's weights)")


def check_resume_architecture(ckpt_path: str, hparams: dict, configured: dict) -> None:
    different = [f"{f}: checkpoint {hparams[f]} vs config {value}" for f, value in configured.items()
                 if value is not None and hparams[f] != value]
    if different:
        raise MixalignError(f"--ckpt_path {ckpt_path}: checkpoint is of another architecture ({', '.join(different)}); "
                            "set model.* (and data.block_size) to the checkpoint's, or give another checkpoint")


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


def default_precision(accelerator) -> str:
    """bf16-mixed where the run gets a GPU with bf16 (tensor-core speed, float32 range), else 32-bit."""
    gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true"
