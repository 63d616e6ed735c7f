"""`AlignedMixture`: the `mixture:` section, computing each round's domain weights inside the run.

With `data.weights: aligned`, round 0's mixture is computed when training starts (after the
from-scratch warm-up, if any), and each later round's when it begins, from the model as it is
then; the data module trains on it from exactly that step. The weights, diagnostics and every
measured candidate are printed, written into the run directory (`mixture/round-<r>.yaml` and
`.png`) and logged to TensorBoard; resuming from a checkpoint keeps the mixtures already computed.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from mixalign.callbacks.kl import texts_for
from mixalign.errors import MixalignError
from mixalign.mixture.config import MixtureConfig
from mixalign.mixture.method import align
from mixalign.mixture.probes import Ranks, gather_objects
from mixalign.mixture.repetition import passes
from mixalign.mixture.result import MixtureResult, write_weights
from mixalign.mixture.rounds import round_end, round_starts

AUTOCAST = {"bf16-mixed": "bfloat16", "16-mixed": "float16"}
REPEAT_WARNING = 1.0  # warn when a domain's share of the round would pass over its training tokens more than this


def moving_away_note(result: MixtureResult) -> str:
    """A warning when every domain probe moved the model away from the target ('' otherwise): training
    on this data is then unlikely to bring it closer on any mixture (a small corpus, or a target that
    learned from other data)."""
    change = result.domain_exact_change
    if change is not None and len(change) and (np.asarray(change) > 0).all():
        return ("warning: every domain probe moved the model away from the target in exact KL (changes "
                f"{min(change):+.4f} to {max(change):+.4f} bits/byte): training on this data is unlikely to bring "
                "it closer on any mixture; expect the distances to grow (more data, or another target)")
    if change is None and len(result.domain_cosines) and (np.asarray(result.domain_cosines) <= 0).all():
        return ("warning: no domain probe moved the model toward the target (every cos(Delta_k, t) <= 0): "
                "training on this data is unlikely to bring it closer on any mixture")
    return ""


def no_exact_note(result: MixtureResult) -> str:
    """Why a round has no exact KL ('' when it has): the figures and candidates that need it are absent."""
    if result.current_exact is not None:
        return ""
    return ("note: no exact KL (the target is not a model sharing the data's tokenizer): kl-softmin is skipped "
            "and the candidates are compared in log-likelihood-vector distance; closing reads the cross-entropy gap")


class AlignedMixture(MixtureConfig, L.Callback):
    """Compute the mixture toward `target` at the start of every round (see `MixtureConfig`)."""

    def __post_init__(self):
        super().__post_init__()
        self.summaries: dict[int, dict] = {}  # round start -> its YAML content, kept in checkpoints
        self.starts: list[int] = []

    @property
    def state_key(self) -> str:
        return "AlignedMixture"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if stage != "fit" or not datamodule.aligned:
            if self.target and stage == "fit":
                rank_zero_info(f"mixture: data.weights is {datamodule.weights_spec!r}, so no mixture is computed; "
                               f"mixture.target ({self.target}) is the target of the distance monitor only")
            return
        if self.target is None:
            raise MixalignError("data.weights is 'aligned' but mixture.target is not set: name the target model")
        texts_for("mixture", self.textset, self.n_texts)  # a bad mixture.n_texts fails here, naming the key
        self.starts = round_starts(trainer.max_steps, self.rounds, self.warmup_steps)
        if self.warmup_steps and not datamodule.schedule.has(0):
            datamodule.set_weights(0, "uniform")  # the from-scratch warm-up: real steps of this run

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.starts and self.warmup_steps and trainer.global_step == 0:
            self._report_warmup(trainer)
        self._begin_round(trainer, pl_module)

    def _report_warmup(self, trainer: L.Trainer) -> None:
        """The from-scratch warm-up is part of the run: say so, and log its uniform weights at step 0."""
        domains = trainer.datamodule.domains
        rank_zero_info(f"mixture: from-scratch warm-up, steps 0-{self.warmup_steps - 1} on uniform weights; "
                       f"the mixture is computed at step {self.warmup_steps} from the model as it is then")
        if trainer.is_global_zero and trainer.logger is not None:
            trainer.logger.log_metrics({f"mixture/weight/{d}": 1 / len(domains) for d in domains}, 0)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        self._begin_round(trainer, pl_module)  # global_step has just become the next step's

    def _begin_round(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step, datamodule = trainer.global_step, trainer.datamodule
        if step not in self.starts or datamodule.schedule.has(step):
            return
        result = align(self, pl_module, datamodule, step, round_end(self.starts, step, trainer.max_steps),
                       trainer.max_steps, trainer.gradient_clip_val, device=str(pl_module.device),
                       autocast=AUTOCAST.get(str(trainer.precision)),  # probes copy the model: it is untouched
                       ranks=Ranks(trainer.global_rank, trainer.world_size, gather_objects),
                       accumulate=trainer.accumulate_grad_batches)
        datamodule.set_weights(step, dict(zip(result.domains, result.weights)))
        self.summaries[step] = result.to_dict()
        self._report(trainer, result, self.starts.index(step), step)
        self._warn_repetition(trainer, result, round_end(self.starts, step, trainer.max_steps) - step)

    def _warn_repetition(self, trainer: L.Trainer, result: MixtureResult, steps: int) -> None:
        """Say which domains the round will read more than once: the mixture's hidden cost on small domains."""
        datamodule = trainer.datamodule
        tokens = (steps * datamodule.batch_size * datamodule.block_size * trainer.accumulate_grad_batches
                  * trainer.world_size)
        reads = passes(result.weights, tokens, [datamodule.data.count(d, "train") for d in result.domains])
        repeated = [f"{d} {r:.1f}x" for d, r in zip(result.domains, reads) if r > REPEAT_WARNING]
        if repeated:
            rank_zero_info(f"mixture: warning: this round reads these domains' training tokens more than once: "
                           f"{', '.join(repeated)} (repetition; more data for them, or mixture.max_epochs, avoids it)")

    def _report(self, trainer: L.Trainer, result: MixtureResult, round_index: int, step: int) -> None:
        log_dir = trainer.log_dir  # a collective under DDP: every rank must ask
        if not trainer.is_global_zero:
            return
        print(f"\nmixture for round {round_index} (from step {step}):\n{result.table()}\n", flush=True)
        for note in (no_exact_note(result), moving_away_note(result)):
            if note:
                rank_zero_info(f"mixture: {note}")
        if log_dir:
            write_weights(result, Path(log_dir) / "mixture" / f"round-{round_index}.yaml")
        logger = trainer.logger
        if logger is None:
            return
        # The weights as scalars; the candidates (one value each per round) as the text table and, at the
        # end of fit, the round's chart (callbacks/dashboard.py), not as one-point charts.
        logger.log_metrics({f"mixture/weight/{d}": float(w) for d, w in zip(result.domains, result.weights)}, step)
        if isinstance(logger, TensorBoardLogger):
            text = "    " + result.table().replace("\n", "\n    ")
            logger.experiment.add_text("mixture/diagnostics", f"round {round_index}\n\n{text}", step)

    def summary(self) -> str:
        """Which mixture the run trained on, per round, in words (for the end-of-fit summary)."""
        parts = []
        for step, content in sorted(self.summaries.items()):
            selection = content["diagnostics"]["selection"]
            why = f" ({selection['reason']})" if selection else " (the solver's, as solved)"
            parts.append(f"from step {step}: {content['chosen']}{why}")
        return "; ".join(parts)

    def state_dict(self) -> dict:
        return {"summaries": self.summaries}

    def load_state_dict(self, state_dict: dict) -> None:
        self.summaries = {int(k): v for k, v in state_dict.get("summaries", {}).items()}
