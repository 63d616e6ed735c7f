"""`Dashboard` and `DashboardLogger`: TensorBoard that opens on the answer.

TIME SERIES, the page TensorBoard opens on, shows tag groups alphabetically: the distances are logged
under `distance/` (callbacks/kl.py), so they come first, and the logger drops Lightning's `epoch` scalar
(the data stream is endless: it is 0 throughout). A custom-scalars layout puts exact KL both ways on
one chart; the HPARAMS tab gets one row per run (its target, the mixture it trained on, its final
distances) so runs compare side by side; each round's candidate chart is an image.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from mixalign.callbacks.kl import EXACT, LLVEC, MC, LogLikelihoodKL
from mixalign.callbacks.mixture import AlignedMixture

LAYOUT = {
    "distance to the target": {
        "exact KL on the text set, both ways (bits/byte)": ["Multiline", [rf"^{EXACT}/(model_to_target|target_to_model)$"]],
        "log-likelihood-vector distance (bits/byte)": ["Multiline", [rf"^{LLVEC}$"]],
        "Monte Carlo KL (bits/byte)": ["Multiline", [rf"^{MC}/(model_to_target|target_to_model)$"]],
    },
    "training": {
        "loss": ["Multiline", [r"^train/loss$", r"^val/loss$"]],
        "mixture weights": ["Multiline", [r"^mixture/weight/.*"]],
    },
}


class DashboardLogger(TensorBoardLogger):
    """TensorBoardLogger without the `epoch` scalar Lightning adds to every logged step."""

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)


class Dashboard(L.Callback):
    """The custom-scalars layout at the start, the HPARAMS row and the candidate charts at the end."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if isinstance(trainer.logger, TensorBoardLogger) and trainer.is_global_zero:
            trainer.logger.experiment.add_custom_scalars(LAYOUT)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = trainer.logger
        if not isinstance(logger, TensorBoardLogger) or not trainer.is_global_zero:
            return
        params, metrics = {"max_steps": trainer.max_steps}, {}
        kl = next((c for c in trainer.callbacks if isinstance(c, LogLikelihoodKL) and c.measurements), None)
        if kl is not None:
            last = kl.measurements[-1]
            params["target"] = str(kl.target)
            metrics["summary/llvec_distance"] = last.llvec_distance
            if last.exact_model_to_target is not None:
                metrics["summary/exact_kl_model_to_target"] = last.exact_model_to_target
                metrics["summary/exact_kl_target_to_model"] = last.exact_target_to_model
        mixture = next((c for c in trainer.callbacks if isinstance(c, AlignedMixture) and c.summaries), None)
        if mixture is not None:
            params["mixture"] = mixture.summary()[:250]
        params["weights"] = ", ".join(f"{d} {w:.3f}" for d, w in zip(trainer.datamodule.domains, trainer.datamodule.weights))
        logger.log_hyperparams(params, metrics)
        self._candidate_charts(trainer, logger)

    @staticmethod
    def _candidate_charts(trainer: L.Trainer, logger: TensorBoardLogger) -> None:
        """Each round's bar chart of the candidates (`mixture/round-<r>.png`) as a TensorBoard image."""
        import matplotlib.image

        for png in sorted(Path(logger.log_dir, "mixture").glob("round-*.png")):
            image = matplotlib.image.imread(png)[..., :3]
            logger.experiment.add_image(f"mixture/{png.stem}", image, trainer.global_step, dataformats="HWC")
