"""`mixalign` command line: LightningCLI's fit and validate, plus mixalign's own subcommands.

Every subcommand reads the same YAML configs (`--config configs/pile.yaml`) and accepts the same
dotted overrides (`--data.weights natural`, `--trainer.max_steps 100`). A user error (a config
field, a file, a value) is one line on stderr and exit code 2; anything else is a bug and keeps
its traceback.

Inside the package, imports point down: `parsing` < `lightning` (MixalignCLI) < one module per subcommand < this table.
"""

from __future__ import annotations

import logging
import signal
import sys
import warnings
from dataclasses import dataclass
from importlib.metadata import version
from typing import Callable

from lightning.pytorch.utilities.exceptions import SIGTERMException

from mixalign.cli.data import prepare_main, textset_main
from mixalign.cli.eval import eval_main
from mixalign.cli.export import export_main
from mixalign.cli.kl import kl_main
from mixalign.cli.lightning import MixalignCLI, default_precision
from mixalign.cli.parsing import check_config_files
from mixalign.cli.sample import sample_main
from mixalign.cli.score import score_main
from mixalign.cli.weights import weights_main
from mixalign.errors import MixalignError

__all__ = ["SUBCOMMANDS", "MixalignCLI", "Subcommand", "default_precision", "main"]


@dataclass(frozen=True)
class Subcommand:
    main: Callable[[list[str]], None]  # its docstring is the subcommand's --help description
    summary: str  # its line in `mixalign --help`


SUBCOMMANDS = {
    "prepare": Subcommand(prepare_main, "--config C: tokenize the config's data once into the cache"),
    "weights": Subcommand(weights_main, "--config C --out W.yaml: the aligned mixture alone (probes, candidates)"),
    "score": Subcommand(score_main, "--model M --out V.npz: a model's log-likelihood vector on a text set"),
    "kl": Subcommand(kl_main, "A B [...]: vector distance, exact KL, (--mc N) Monte Carlo KL between models"),
    "textset": Subcommand(textset_main, "--config C --out T.jsonl.zst: a held-out text set from the config's data"),
    "sample": Subcommand(sample_main, "--model M [--prompt P]: text from a model (temperature, top_k, seed)"),
    "export": Subcommand(export_main, "--ckpt X --out DIR: a checkpoint as a Hugging Face GPT-2 directory"),
    "eval": Subcommand(eval_main, "--target T --models M [...]: downstream task accuracy and gap (lm-eval)"),
}


def subcommand_list() -> str:
    """The epilog of `mixalign --help` (and fit's, validate's): one line per subcommand above."""
    return "mixalign's own subcommands (each has --help):\n" + "\n".join(
        f"  mixalign {name:<8} {entry.summary}" for name, entry in SUBCOMMANDS.items())


class _NoAdvertising(logging.Filter):
    """Drops Lightning's product tips (the LitLogger one on every run): nothing a user can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("💡 Tip")


def quiet() -> None:
    """Keep the console to what a user can act on: Lightning's tips, its deprecation notice about its own
    internals, LightningCLI's note on the args parameter (mixalign passes argv on purpose) and
    transformers' notes on its own cache arguments (read by mixalign's sampler) go."""
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter", category=UserWarning)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated", category=FutureWarning)
    logging.getLogger("transformers").setLevel(logging.ERROR)  # its deprecation notes on its own arguments
    for handler in logging.getLogger("lightning.pytorch").handlers:
        handler.addFilter(_NoAdvertising())


def main(args: list[str] | None = None) -> None:
    """Run a subcommand; a user error (`MixalignError`) is one clear line and exit code 2; a SIGTERM, 143."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] in (["--version"], ["-V"]):
        return print(f"mixalign {version('mixalign')}")
    quiet()
    try:
        check_config_files(argv)
        if argv and argv[0] in SUBCOMMANDS:
            return SUBCOMMANDS[argv[0]].main(argv[1:])
        MixalignCLI(args=args, epilog=subcommand_list())
    except MixalignError as error:
        print(f"mixalign: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except SIGTERMException:  # SaveOnInterrupt saved last.ckpt and said how to resume
        raise SystemExit(128 + signal.SIGTERM) from None
