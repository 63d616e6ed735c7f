"""`DownstreamEval`: task accuracy and the gap to the target's at every validation, beside the KL curves."""

from __future__ import annotations

import lightning as L
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

from mixalign.downstream import (
    compare_to_target,
    evaluate_gpt,
    evaluate_model,
    task_specs,
)
from mixalign.paths import InputPath, plain


class DownstreamEval(L.Callback):
    """At each validation (rank 0; the other ranks wait), the model's accuracy on `tasks` through
    lm-eval, its gap to the target's accuracy, and agreement with the target's choices, logged as
    downstream/<task>/{acc,gap,agreement} and downstream/mean_gap. The target is evaluated once.

    Args:
        target: the target model (mixalign .ckpt or Hugging Face directory).
        tasks: 'demo', demo_<domain>, task YAML files or lm-eval task names (on disk).
        limit: first N items of each task (None: all); every validation costs a full evaluation.
        batch_size: lm-eval's batch size.
        include_path: directories of your own lm-eval task YAMLs.
    """

    def __init__(self, target: InputPath, tasks: list[InputPath | str] | None = None, limit: int | None = None,
                 batch_size: int = 16, include_path: list[InputPath] | None = None):
        self.target, self.tasks, self.limit = plain(target), plain(tasks or ["demo"]), limit
        self.batch_size, self.include_path = batch_size, plain(include_path)
        self._target_results: dict | None = None

    def _evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        tasks, device = task_specs(self.tasks), str(pl_module.device)
        if self._target_results is None:
            self._target_results = evaluate_model(self.target, tasks, device, self.batch_size, self.limit, self.include_path)
        mine = evaluate_gpt(pl_module.model, pl_module.tokenizer_json, tasks, device, self.batch_size, self.limit,
                            self.include_path)
        report = compare_to_target({"target": self._target_results, "model": mine}, "target")["models"]["model"]
        metrics = {"downstream/mean_gap": report["mean_gap"], "downstream/mean_agreement": report["mean_agreement"]}
        for task, row in report["tasks"].items():
            metrics.update({f"downstream/{task}/{k}": row[k] for k in ("acc", "gap", "agreement")})
        return metrics

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        # Under FSDP the export needs the whole weights (a collective: every rank enters); elsewhere a no-op.
        with FSDP.summon_full_params(trainer.strategy.model, writeback=False):
            if trainer.is_global_zero:
                metrics = self._evaluate(trainer, pl_module)
                if trainer.logger is not None:
                    trainer.logger.log_metrics(metrics, step=trainer.global_step)
        trainer.strategy.barrier("mixalign-downstream")
