"""`LogLikelihoodKL`: at every validation, how far is the model from the target, on two scales?

- the **log-likelihood-vector distance** (Kishino et al.'s scale, docs/method.md, section 2): the papers'
  measure, from each model's per-text log-likelihoods; not a calibrated KL;
- the **exact KL on the text set**, both directions, whenever the target is a model that shares
  the model's tokenizer: full-vocabulary KL at every scored position (docs/method.md, section 2);
- optionally, at the end of training, a **Monte Carlo KL** (any tokenizers).

The target's vector is computed once per (target, text set) and cached beside the run; each
validation's vector is saved in the run directory, and at the end of fit the run's trajectory and
the target are drawn as a model map. Texts are sharded across ranks and gathered.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

from mixalign.data.tokenizer import load_tokenizer
from mixalign.errors import MixalignError
from mixalign.llvec.estimators import centre, estimate_kl, per_group_kl
from mixalign.llvec.models import (
    LanguageModel,
    load_model,
    model_from_gpt,
    model_vector,
    score_and_exact_kl,
)
from mixalign.llvec.montecarlo import monte_carlo_kl
from mixalign.llvec.plots import save_model_map
from mixalign.llvec.textset import (
    TextSet,
    load_textset,
    resolve_textset,
    subset_textset,
)
from mixalign.llvec.token_kl import mean_kl, per_domain_kl
from mixalign.llvec.vectors import (
    LogLikelihoodVector,
    check_same_textset,
    load_vector,
    save_vector,
)
from mixalign.paths import InputPath, plain, shown_path
from mixalign.units import DEFAULT_SEED


def texts_for(section: str, spec, n_texts: int | None) -> TextSet:
    """The text set `spec` names, cut to `n_texts` (None: all of it); a count the set cannot give is a
    user error that names `<section>.n_texts` and the text set (a small own text set meets the demo's 256)."""
    textset = load_textset(resolve_textset(spec))
    if n_texts is not None and not 0 < n_texts <= len(textset):
        raise MixalignError(f"{section}.n_texts is {n_texts} but the text set {shown_path(str(spec))} has "
                            f"{len(textset)} texts: set {section}.n_texts to at most {len(textset)}, or null to use "
                            "every text")
    return subset_textset(textset, n_texts) if n_texts else textset

# TensorBoard tags. Its first page (TIME SERIES) shows tag groups, the part before the first "/", in
# alphabetical order: `distance` (the answer, whole text set) first, then its breakdown by domain and
# its standard errors under the same names.
LLVEC = "distance/llvec"                # the log-likelihood-vector distance (Kishino et al. scale)
EXACT = "distance/exact_kl"             # /model_to_target, /target_to_model
MC = "distance/mc_kl"                   # /model_to_target, /target_to_model, at the end of fit
CE_GAP = "val/ce_gap_to_target_nats_per_text"  # mean per-text cross-entropy gap, nats per text (not per byte)


def se_tag(tag: str) -> str:
    """The tag of `tag`'s standard error: distance/x -> distance_se/x."""
    return tag.replace("distance/", "distance_se/", 1)


def domain_tag(tag: str, domain: str) -> str:
    """The tag of `tag` on one domain's texts: distance/x -> distance_by_domain/x/<domain>."""
    return f"{tag.replace('distance/', 'distance_by_domain/', 1)}/{domain}"


@dataclass
class Measurement:
    """The distances to the target at one step (bits/byte); exact KL is None without a target model."""

    step: int
    llvec_distance: float
    exact_model_to_target: float | None = None
    exact_target_to_model: float | None = None
    metrics: dict = field(default_factory=dict)


class LogLikelihoodKL(L.Callback):
    """Log the distances to a target at every validation (see the module docstring).

    Args:
        target: the target model: a mixalign checkpoint, a local Hugging Face model directory,
            or a saved log-likelihood vector (`.npz`, vector distance only) on the same text set.
            In a config's `kl:` section it is `mixture.target` (linked); None: the monitor is off.
        textset: the evaluation text set: ``demo`` (shipped) or a text-set file (linked from
            `mixture.textset` in a config's `kl:` section).
        n_texts: score only this many texts (an evenly spaced subset), for quick runs.
        exact_kl: compute the exact KL when the target is a model sharing the tokenizer.
        mc_samples: at the end of training, a Monte Carlo KL from this many samples each way
            (0: none). The only calibrated KL for a target of another tokenizer.
        mc_seed: fixes the Monte Carlo samples.
        max_batch_tokens: token budget of one scoring batch (default: by device).
        clip_quantile: clip log-likelihoods from below at this quantile before differencing.
        cache_dir: where the target's vector is cached (default: ``<default_root_dir>/llvec_cache``).
    """

    def __init__(
        self,
        target: InputPath | None = None,
        textset: Literal["demo"] | InputPath = "demo",
        n_texts: int | None = None,
        exact_kl: bool = True,
        mc_samples: int = 0,
        mc_seed: int = DEFAULT_SEED,
        max_batch_tokens: int | None = None,
        clip_quantile: float | None = None,
        cache_dir: str | None = None,
    ):
        if mc_samples < 0:
            raise MixalignError(f"LogLikelihoodKL.mc_samples must be >= 0, got {mc_samples}")
        self.target = plain(target)
        self.textset_spec = plain(textset)
        self.n_texts = n_texts
        self.exact_kl = exact_kl
        self.mc_samples = mc_samples
        self.mc_seed = mc_seed
        self.max_batch_tokens = max_batch_tokens
        self.clip_quantile = clip_quantile
        self.cache_dir = cache_dir
        self.textset: TextSet | None = None
        self.target_vector: LogLikelihoodVector | None = None
        self.target_model: LanguageModel | None = None
        self.measurements: list[Measurement] = []  # for the end-of-fit summary
        self.monte_carlo: dict[str, object] = {}
        self._noted = False  # the "no exact KL, because ..." note is given once

    # -- setup -----------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.target is not None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.textset is not None or not self.active:
            return
        self.textset = texts_for("kl", self.textset_spec, self.n_texts)
        datamodule = trainer.datamodule
        datamodule.check_heldout(self.textset)
        self.token_ids = datamodule.encode(self.textset.texts)  # the model's own tokenizer
        self.tokenizer = load_tokenizer(datamodule.data.tokenizer_path)
        self.tokenizer_id = datamodule.tokenizer_id
        self.target_vector = self._target_vector(trainer)

    def _target_vector(self, trainer: L.Trainer) -> LogLikelihoodVector:
        """Rank 0 scores (or loads the cached) target; the other ranks wait and read its cache."""
        cache_dir = self.cache_dir or Path(trainer.default_root_dir) / "llvec_cache"
        vector = None
        if trainer.is_global_zero:
            vector = model_vector(self.target, self.textset, cache_dir, self.max_batch_tokens)
        trainer.strategy.barrier("mixalign-target-vector")
        return vector if vector is not None else model_vector(self.target, self.textset, cache_dir)

    def _student(self, pl_module: L.LightningModule) -> LanguageModel:
        return model_from_gpt(pl_module.model, self.tokenizer, "model")

    def _target(self, pl_module: L.LightningModule) -> LanguageModel | None:
        """The target as a model on the module's device; None for a saved vector."""
        if str(self.target).endswith(".npz"):
            return None
        if self.target_model is None or self.target_model.device != pl_module.device:
            self.target_model = load_model(self.target, device=pl_module.device, memoize=True)
        return self.target_model

    def _exact_target(self, pl_module: L.LightningModule) -> LanguageModel | None:
        """The target when exact KL can be computed (a model with the same tokenizer), else None."""
        target = self._target(pl_module) if self.exact_kl else None
        if target is not None and target.tokenizer_id == self.tokenizer_id:
            return target
        if not self._noted:
            self._noted = True
            why = ("exact_kl is off" if not self.exact_kl else "the target is a saved vector" if target is None
                   else "the target has another tokenizer")
            rank_zero_info(f"LogLikelihoodKL: no exact KL ({why}); only the log-likelihood-vector distance is logged"
                           + ("" if self.mc_samples else " (set mc_samples for a Monte Carlo KL at the end of training)"))
        return None

    # -- every validation ------------------------------------------------------------------------
    def _sharded(self, trainer: L.Trainer, pl_module: L.LightningModule, compute) -> list[np.ndarray]:
        """compute(indices) -> per-text arrays for those texts; each rank takes every world_size-th
        text, and the gather drops the padding of short shards."""
        rank, world = trainer.global_rank, trainer.world_size
        n = len(self.token_ids)
        mine = list(range(rank, n, world))
        # Under FSDP each rank holds a shard of the weights; scoring needs them whole (a collective:
        # every rank is here). Elsewhere there is nothing to gather and this does nothing.
        with FSDP.summon_full_params(trainer.strategy.model, writeback=False), trainer.precision_plugin.forward_context():
            arrays = compute(mine)
        shard_len = -(-n // world)
        out = []
        for values in arrays:
            padded = torch.full((shard_len,), float("nan"), dtype=torch.float64, device=pl_module.device)
            padded[: len(mine)] = torch.as_tensor(values, dtype=torch.float64, device=pl_module.device)
            gathered = pl_module.all_gather(padded).reshape(world, shard_len) if world > 1 else padded[None]
            gathered = gathered.cpu().numpy()
            full = np.empty(n, dtype=np.float64)
            for r in range(world):
                full[r::world] = gathered[r, : len(range(r, n, world))]
            out.append(full)
        return out

    def _passes(self, trainer, pl_module, target: LanguageModel | None):
        """(per-text log-likelihoods, per-text exact KL both ways or None), in one pass over the texts
        where the target allows (`score_and_exact_kl`), each rank taking its share."""

        def measure(mine):
            scores, kl = score_and_exact_kl(pl_module.model, target, [self.token_ids[i] for i in mine],
                                            self.max_batch_tokens)
            return [scores.values] + ([kl.a_to_b, kl.b_to_a] if kl is not None else [])

        values, *pair = self._sharded(trainer, pl_module, measure)
        return values, (tuple(pair) or None)

    def _exact_metrics(self, per_text_pair: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
        metrics = {}
        ts = self.textset
        for name, per_text in zip(("model_to_target", "target_to_model"), per_text_pair):
            overall = mean_kl(per_text, ts.mean_bytes)
            metrics[f"{EXACT}/{name}"] = overall.bits_per_byte
            metrics[se_tag(f"{EXACT}/{name}")] = overall.se
            for domain, value in per_domain_kl(per_text, ts.domains, ts.n_bytes).items():
                metrics[domain_tag(f"{EXACT}/{name}", domain)] = value.bits_per_byte
        return metrics

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Score the current model, save its vector, and return the distances to log."""
        values, exact = self._passes(trainer, pl_module, self._exact_target(pl_module))
        step = trainer.global_step
        vector = LogLikelihoodVector(
            values=values, textset_hash=self.textset.hash, model=f"{type(pl_module).__name__} step {step}",
            mean_bytes=self.textset.mean_bytes, domains=self.textset.domains, n_bytes=self.textset.n_bytes,
            meta={"step": step},
        )
        check_same_textset(vector, self.target_vector)
        l_model, l_target = torch.from_numpy(values), torch.from_numpy(self.target_vector.values)
        estimate = estimate_kl(l_model, l_target, self.textset.mean_bytes, self.clip_quantile)
        metrics = {LLVEC: estimate.kl_bits_per_byte, se_tag(LLVEC): estimate.se_bits_per_byte,
                   CE_GAP: estimate.ce_gap_nats}
        by_domain = per_group_kl(l_model, l_target, list(self.textset.domains), self.textset.n_bytes, self.clip_quantile)
        metrics.update({domain_tag(LLVEC, d): e.kl_bits_per_byte for d, e in by_domain.items()})
        if exact is not None:
            metrics.update(self._exact_metrics(exact))
        self.measurements.append(Measurement(step, estimate.kl_bits_per_byte, metrics.get(f"{EXACT}/model_to_target"),
                                             metrics.get(f"{EXACT}/target_to_model"), metrics))
        self._write_vector(trainer, vector, l_model - l_target, step)
        return metrics

    def _write_vector(self, trainer: L.Trainer, vector: LogLikelihoodVector, difference: torch.Tensor, step: int) -> None:
        log_dir = trainer.log_dir  # a collective under DDP: every rank must ask
        if not trainer.is_global_zero:
            return
        if isinstance(trainer.logger, TensorBoardLogger):
            trainer.logger.experiment.add_histogram("val/centred_log_likelihood_difference", centre(difference).numpy(), step)
        if log_dir:
            save_vector(vector, Path(log_dir) / "llvec" / f"step-{step:08d}.npz")

    def _measure_and_log(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Measure in eval mode without gradients; while fitting, log at the step the model has taken."""
        was_training = pl_module.training
        pl_module.eval()
        with torch.inference_mode():
            metrics = self._measure(trainer, pl_module)
        pl_module.train(was_training)
        if trainer.logger is not None and trainer.state.fn == "fit":
            trainer.logger.log_metrics(metrics, step=trainer.global_step)
        return metrics

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The starting point, so that every run shows its distance before any training."""
        if self.active and trainer.global_step == 0 and not self.measurements:
            self._measure_and_log(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.active:
            return
        metrics = self._measure_and_log(trainer, pl_module)
        # For checkpoint monitors, and for a standalone `validate`'s table and logger.
        pl_module.log_dict(metrics, logger=trainer.state.fn != "fit")
        pl_module.log("dist", metrics[LLVEC], prog_bar=True, logger=False)
        if f"{EXACT}/model_to_target" in metrics:
            pl_module.log("kl", metrics[f"{EXACT}/model_to_target"], prog_bar=True, logger=False)

    # -- end of training -------------------------------------------------------------------------
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The final distances (when the last step was not validated), then the Monte Carlo KL."""
        if not self.active:
            return
        if not self.measurements or self.measurements[-1].step != trainer.global_step:
            self._measure_and_log(trainer, pl_module)
        if self.mc_samples:
            self._monte_carlo(trainer, pl_module)

    def _monte_carlo(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Monte Carlo KL both ways on rank 0 (the other ranks wait)."""
        if trainer.is_global_zero and (target := self._target(pl_module)) is not None:
            was_training = pl_module.training
            pl_module.eval()
            student = self._student(pl_module)
            for name, (a, b) in {"model_to_target": (student, target), "target_to_model": (target, student)}.items():
                self.monte_carlo[name] = result = monte_carlo_kl(a, b, self.mc_samples, self.mc_seed, progress=True)
                metrics = {f"{MC}/{name}": result.headline.bits_per_byte, se_tag(f"{MC}/{name}"): result.headline.se}
                if result.path_exact is not None:  # the headline is along the paths; the text-level figure beside it
                    metrics[f"{MC}/{name}_text_level"] = result.text.bits_per_byte
                if trainer.logger is not None:
                    trainer.logger.log_metrics(metrics, step=trainer.global_step)
            pl_module.train(was_training)
        trainer.strategy.barrier("mixalign-monte-carlo")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The model map of every vector this run saved (before and after any resume) and the target."""
        log_dir = trainer.log_dir  # a collective under DDP: every rank must ask
        if not self.active or not trainer.is_global_zero or not log_dir:
            return
        saved = sorted((Path(log_dir) / "llvec").glob("step-*.npz"))
        if not saved:
            return
        vectors = [load_vector(p) for p in saved] + [self.target_vector]
        labels = [f"step {int(p.stem.split('-')[1])}" for p in saved] + ["target"]
        png = Path(log_dir) / "model_map.png"
        figure = save_model_map(vectors, labels, png, title="training trajectory and target", star="target",
                                trajectory=True)
        if isinstance(trainer.logger, TensorBoardLogger):
            trainer.logger.experiment.add_figure("model_map", figure, trainer.global_step)
        rank_zero_info(f"model map written to {png}")

    # -- resuming --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"measurements": [asdict(m) for m in self.measurements]}

    def load_state_dict(self, state_dict: dict) -> None:
        self.measurements = [Measurement(**m) for m in state_dict.get("measurements", [])]
