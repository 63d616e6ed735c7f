"""`LogLikelihoodKL`: at every validation, score the model on a fixed text set and log its KL to a target.

The target's vector is computed once per (target, text set) and cached beside the run; each
validation's vector is saved in the run directory, and at the end of fit the run's trajectory and
the target are drawn as a model map (SPEC section 2).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

from mixalign.llvec.estimators import centre, estimate_kl, per_group_kl
from mixalign.llvec.plots import save_model_map
from mixalign.llvec.scoring import model_vector, score_gpt
from mixalign.llvec.textset import TextSet, load_textset, resolve_textset, subset_textset
from mixalign.llvec.vectors import LogLikelihoodVector, check_same_textset, save_vector


class LogLikelihoodKL(L.Callback):
    """Log `val/kl_to_target` (bits/byte) and friends at every validation.

    Args:
        target: the target model: a mixalign checkpoint, a local Hugging Face model directory,
            or a saved log-likelihood vector (`.npz`) on the same text set.
        textset: the evaluation text set: ``demo`` (shipped) or a text-set file.
        n_texts: score only this many texts (an evenly spaced subset), for quick runs.
        max_batch_tokens: token budget of one scoring batch (default: by device).
        clip_quantile: clip log-likelihoods from below at this quantile before differencing.
        cache_dir: where the target's vector is cached (default: ``<default_root_dir>/llvec_cache``).
    """

    def __init__(
        self,
        target: str,
        textset: str = "demo",
        n_texts: int | None = None,
        max_batch_tokens: int | None = None,
        clip_quantile: float | None = None,
        cache_dir: str | None = None,
    ):
        self.target = target
        self.textset_spec = textset
        self.n_texts = n_texts
        self.max_batch_tokens = max_batch_tokens
        self.clip_quantile = clip_quantile
        self.cache_dir = cache_dir
        self.textset: TextSet | None = None
        self.target_vector: LogLikelihoodVector | None = None
        self.history: list[tuple[int, LogLikelihoodVector]] = []
        self.kl_history: list[tuple[int, float]] = []  # (step, KL in bits/byte), for the end-of-fit summary

    # -- setup -----------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.textset is not None:
            return
        textset = load_textset(resolve_textset(self.textset_spec))
        self.textset = subset_textset(textset, self.n_texts) if self.n_texts else textset
        trainer.datamodule.check_heldout(self.textset)
        self.token_ids = trainer.datamodule.encode(self.textset.texts)  # the model's own tokenizer
        self.target_vector = self._target_vector(trainer)

    def _target_vector(self, trainer: L.Trainer) -> LogLikelihoodVector:
        """Rank 0 scores (or loads the cached) target; the other ranks wait and read its cache."""
        cache_dir = self.cache_dir or Path(trainer.default_root_dir) / "llvec_cache"
        vector = None
        if trainer.is_global_zero:
            vector = model_vector(self.target, self.textset, cache_dir, self.max_batch_tokens)
        trainer.strategy.barrier("mixalign-target-vector")
        return vector if vector is not None else model_vector(self.target, self.textset, cache_dir)

    # -- every validation ------------------------------------------------------------------------
    def _score_sharded(self, trainer: L.Trainer, pl_module: L.LightningModule) -> np.ndarray:
        """Each rank scores every world_size-th text; the gather drops the padding of short shards."""
        rank, world = trainer.global_rank, trainer.world_size
        n = len(self.token_ids)
        mine = list(range(rank, n, world))
        # Under FSDP each rank holds a shard of the weights; scoring needs them whole (a collective:
        # every rank is here). Elsewhere there is nothing to gather and this does nothing.
        with FSDP.summon_full_params(trainer.strategy.model, writeback=False), trainer.precision_plugin.forward_context():
            result = score_gpt(pl_module.model, [self.token_ids[i] for i in mine], self.max_batch_tokens)
        shard_len = -(-n // world)
        padded = torch.full((shard_len,), float("nan"), dtype=torch.float64, device=pl_module.device)
        padded[: len(mine)] = torch.as_tensor(result.values, device=pl_module.device)
        gathered = pl_module.all_gather(padded).reshape(world, shard_len).cpu().numpy() if world > 1 else padded[None].cpu().numpy()
        values = np.empty(n, dtype=np.float64)
        for r in range(world):
            values[r::world] = gathered[r, : len(range(r, n, world))]
        return values

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Score the current model, save its vector, and return the KL metrics to log."""
        values = self._score_sharded(trainer, pl_module)
        step = trainer.global_step
        vector = LogLikelihoodVector(
            values=values,
            textset_hash=self.textset.hash,
            model=f"{type(pl_module).__name__} step {step}",
            mean_bytes=self.textset.mean_bytes,
            domains=self.textset.domains,
            n_bytes=self.textset.n_bytes,
            meta={"step": step},
        )
        check_same_textset(vector, self.target_vector)
        l_model = torch.from_numpy(values)
        l_target = torch.from_numpy(self.target_vector.values)
        estimate = estimate_kl(l_model, l_target, self.textset.mean_bytes, self.clip_quantile)
        metrics = {
            "val/kl_to_target": estimate.kl_bits_per_byte,
            "val/kl_to_target_se": estimate.se_bits_per_byte,
            "val/ce_gap_to_target": estimate.ce_gap_nats,
        }
        by_domain = per_group_kl(l_model, l_target, list(self.textset.domains), self.textset.n_bytes, self.clip_quantile)
        metrics.update({f"val/kl_to_target/{d}": e.kl_bits_per_byte for d, e in by_domain.items()})
        self.history.append((step, vector))
        self.kl_history.append((step, estimate.kl_bits_per_byte))
        log_dir = trainer.log_dir  # a collective under DDP: every rank must ask
        if trainer.is_global_zero:
            if isinstance(trainer.logger, TensorBoardLogger):
                trainer.logger.experiment.add_histogram(
                    "val/centred_log_likelihood_difference", centre(l_model - l_target).numpy(), step
                )
            if log_dir:
                save_vector(vector, Path(log_dir) / "llvec" / f"step-{step:08d}.npz")
        return metrics

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The starting point, so that every run shows its distance before any training."""
        if trainer.global_step != 0 or self.history:
            return
        was_training = pl_module.training
        pl_module.eval()
        with torch.inference_mode():
            metrics = self._measure(trainer, pl_module)
        pl_module.train(was_training)
        if trainer.logger is not None:
            trainer.logger.log_metrics(metrics, step=0)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = self._measure(trainer, pl_module)
        pl_module.log_dict(metrics, prog_bar=False)
        pl_module.log("kl", metrics["val/kl_to_target"], prog_bar=True, logger=False)

    # -- end of fit ------------------------------------------------------------------------------
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        log_dir = trainer.log_dir  # a collective under DDP: every rank must ask
        if not trainer.is_global_zero or not self.history or not log_dir:
            return
        vectors = [v for _, v in self.history] + [self.target_vector]
        labels = [f"step {s}" for s, _ in self.history] + ["target"]
        png = Path(log_dir) / "model_map.png"
        figure = save_model_map(vectors, labels, png, title="training trajectory and target")
        if isinstance(trainer.logger, TensorBoardLogger):
            trainer.logger.experiment.add_figure("model_map", figure, trainer.global_step)
        rank_zero_info(f"model map written to {png}")
