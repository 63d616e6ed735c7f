"""`NanoGPTModule`: the Lightning shell around `GPT` — loss, optimizer, schedule, logging."""

from __future__ import annotations

import time

import lightning as L
import torch
from tokenizers import Tokenizer
from torchmetrics import Metric

from mixalign.data.tokenizer import vocabulary_id
from mixalign.errors import MixalignError
from mixalign.model.checkpoint import load_gpt
from mixalign.model.nanogpt import GPT, GPTConfig, distillation_loss
from mixalign.model.optim import adamw, lr_at
from mixalign.paths import InputPath, plain


class NonFiniteLossError(MixalignError):
    """A NaN or infinite loss: stop before any checkpoint saves the weights it spoiled."""


class DomainSums(Metric):
    """Per-domain sums and counts, reduced across DDP ranks: per-domain losses and token fractions."""

    full_state_update = False

    def __init__(self, num_domains: int):
        super().__init__()
        self.add_state("sums", torch.zeros(num_domains, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("counts", torch.zeros(num_domains, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, domain: torch.Tensor, values: torch.Tensor) -> None:
        self.sums.index_add_(0, domain, values.detach().to(torch.float64))
        self.counts.index_add_(0, domain, torch.ones_like(self.sums[domain]))

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sums, self.counts


class NanoGPTModule(L.LightningModule):
    """Next-token language modelling with a GPT-2 style `GPT`.

    Args:
        n_layer, n_head, n_embd, block_size, vocab_size, bias, dropout: the `GPTConfig`
            (vocab_size is linked from the data by the CLI).
        learning_rate: peak learning rate after warmup.
        min_lr: learning rate at the end of cosine decay.
        warmup_steps: linear warmup, in optimizer steps.
        lr_decay_steps: step at which the cosine reaches `min_lr` (default: `trainer.max_steps`).
        weight_decay: AdamW decay on 2+ dimensional parameters.
        betas: AdamW betas.
        init_from: start from these weights (continued pretraining): a mixalign checkpoint or a local
            Hugging Face GPT-2 directory, of the same architecture. Unlike ``--ckpt_path`` it
            restores no optimizer or step.
        teacher: knowledge-distillation baseline: a mixalign checkpoint or a local Hugging Face
            GPT-2 directory with the data's tokenizer;
            the loss becomes (1 - alpha) CE + alpha T^2 KL(teacher || student).
        distill_alpha: alpha of the distillation loss.
        distill_temperature: T of the distillation loss.
        compile: `torch.compile` the model (worth it on GPUs; on CPUs compiling costs more than
            it saves at demo scale).
        fused_adamw: the fused AdamW kernel; None = fused on CUDA, the default kernel elsewhere.
    """

    def __init__(
        self,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        block_size: int = 256,
        vocab_size: int = 4096,
        bias: bool = True,
        dropout: float = 0.0,
        learning_rate: float = 1e-3,
        min_lr: float = 1e-4,
        warmup_steps: int = 100,
        lr_decay_steps: int | None = None,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        init_from: InputPath | None = None,
        teacher: InputPath | None = None,
        distill_alpha: float = 0.5,
        distill_temperature: float = 1.0,
        compile: bool = False,
        fused_adamw: bool | None = None,
    ):
        super().__init__()
        init_from, teacher = plain(init_from), plain(teacher)
        self.save_hyperparameters()
        self.config = GPTConfig(n_layer, n_head, n_embd, block_size, vocab_size, bias, dropout)
        self.model = GPT(self.config)
        if init_from:
            base, _ = load_gpt(init_from, expect=self.config)
            self.model.load_state_dict(base.state_dict())
        self.domains: list[str] = []
        self._teacher: list[GPT] = []  # a list keeps the teacher out of state_dict and the optimizer
        self._last_log: tuple[float, int] | None = None
        self._first_nonfinite: torch.Tensor | None = None  # (step, loss), on the device; step -1: none yet
        self._compiled = False

    # -- setup -----------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            return
        if datamodule.block_size > self.config.block_size:
            raise MixalignError(
                f"data.block_size ({datamodule.block_size}) is larger than the model's block_size "
                f"({self.config.block_size})"
            )
        if datamodule.vocab_size > self.config.vocab_size:
            raise MixalignError(
                f"the tokenizer's vocabulary ({datamodule.vocab_size}) is larger than the model's "
                f"vocab_size ({self.config.vocab_size})"
            )
        datamodule.setup(stage)
        self.domains = list(datamodule.domains)
        self.tokenizer_json = datamodule.data.tokenizer_path.read_text(encoding="utf-8")
        self.train_tokens = DomainSums(len(self.domains))
        self.val_losses = DomainSums(len(self.domains))
        if self.hparams.teacher and not self._teacher:
            self._teacher.append(self._load_teacher(self.hparams.teacher))

    def _load_teacher(self, path: str) -> GPT:
        teacher, stored = load_gpt(path)
        if stored is None or vocabulary_id(Tokenizer.from_str(stored)) != vocabulary_id(Tokenizer.from_str(self.tokenizer_json)):
            raise MixalignError(
                f"model.teacher {path}: its tokenizer differs from the data's ({self.trainer.datamodule.hparams.tokenizer}); "
                "distillation compares token distributions, so both must share one tokenizer"
            )
        if teacher.config.vocab_size != self.config.vocab_size:
            raise MixalignError(
                f"model.teacher {path}: vocab_size {teacher.config.vocab_size} differs from the student's {self.config.vocab_size}"
            )
        return teacher.requires_grad_(False)

    def configure_model(self) -> None:
        if self.hparams.compile and not self._compiled:  # once: later fits (mixture rounds) reuse it
            self.model.compile()  # in place: parameter names and checkpoints stay those of the plain model
            self._compiled = True

    def on_fit_start(self) -> None:
        for teacher in self._teacher:
            teacher.to(self.device)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Make the checkpoint self-contained for scoring (tokenizer) and exact resumption (counts);
        refuse to save weights that a non-finite loss has spoiled."""
        self._stop_if_nonfinite()
        if self.domains:
            checkpoint["mixalign"] = {
                "tokenizer_json": self.tokenizer_json,
                "domains": self.domains,
                "domain_token_counts": dict(zip(self.domains, self.train_tokens.sums.tolist())),
            }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        counts = checkpoint.get("mixalign", {}).get("domain_token_counts")
        if counts and self.domains:
            self.train_tokens.sums.copy_(torch.tensor([counts.get(d, 0.0) for d in self.domains]))

    # -- training --------------------------------------------------------------------------------
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)

    def token_losses(self, batch: dict) -> torch.Tensor:
        """Cross-entropy per token: the same float32 log-probabilities that scoring sums."""
        return -self.model.token_logprobs(batch["input"], batch["target"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self._teacher:
            logits = self.model(batch["input"])
            with torch.no_grad():
                teacher_logits = self._teacher[0](batch["input"])
            hp = self.hparams
            loss = distillation_loss(logits, teacher_logits, batch["target"], hp.distill_alpha, hp.distill_temperature)
        else:
            loss = self.token_losses(batch).mean()
        self._note_nonfinite(loss)
        self.log("train/loss", loss, prog_bar=True)
        self.train_tokens.update(batch["domain"], torch.full_like(batch["domain"], batch["target"].size(1)))
        return loss

    def on_train_batch_end(self, outputs, batch: dict, batch_idx: int) -> None:
        step = self.trainer.global_step
        if step % self.trainer.log_every_n_steps != 0:
            return  # everything below syncs or reads clocks: only at logging intervals
        self._stop_if_nonfinite()
        tokens_per_step = batch["target"].numel() * self.trainer.accumulate_grad_batches * self.trainer.world_size
        tokens = step * tokens_per_step
        now = time.perf_counter()
        metrics = {"train/tokens": float(tokens), "train/lr": self.trainer.optimizers[0].param_groups[0]["lr"]}
        if self._last_log is not None and tokens > self._last_log[1]:
            metrics["train/tokens_per_sec"] = (tokens - self._last_log[1]) / (now - self._last_log[0])
        self._last_log = (now, tokens)
        sums, _ = self.train_tokens.compute()
        total = sums.sum().clamp_min(1)
        metrics.update({f"train/frac/{d}": (sums[i] / total).item() for i, d in enumerate(self.domains)})
        weights = self.trainer.datamodule.weights  # the mixture in force at this step
        metrics.update({f"mixture/weight/{d}": float(w) for d, w in zip(self.domains, weights)})
        self.log_dict(metrics, on_step=True, on_epoch=False)

    def _note_nonfinite(self, loss: torch.Tensor) -> None:
        """Remember the first non-finite loss on the device: testing it on the host here would
        stall a GPU every step. `_stop_if_nonfinite` reads it at logging intervals and saves."""
        loss = loss.detach().float()
        if self._first_nonfinite is None:
            self._first_nonfinite = loss.new_full((2,), -1.0)
        now = torch.stack([loss.new_full((), float(self.trainer.global_step)), loss])
        first = (self._first_nonfinite[0] < 0) & ~torch.isfinite(loss)
        self._first_nonfinite = torch.where(first, now, self._first_nonfinite)

    def _stop_if_nonfinite(self) -> None:
        if self._first_nonfinite is None:
            return
        step, loss = self._first_nonfinite.tolist()
        if step >= 0:
            raise NonFiniteLossError(
                f"training stopped: the loss is {loss} at step {int(step)}; no checkpoint was saved after "
                f"it, so the last checkpoint holds the last good weights"
            )

    def on_train_end(self) -> None:
        self._stop_if_nonfinite()

    # -- validation ------------------------------------------------------------------------------
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.val_losses.update(batch["domain"], self.token_losses(batch).mean(dim=1))

    def on_validation_epoch_end(self) -> None:
        sums, counts = self.val_losses.compute()
        self.val_losses.reset()
        present = counts > 0
        means = sums / counts.clamp_min(1)
        metrics = {f"val/loss/{d}": means[i].float() for i, d in enumerate(self.domains) if present[i]}
        metrics["val/loss"] = means[present].mean().float()
        # Already reduced across ranks by the metric. While fitting they go to the logger at the step
        # the model has taken, as the distances and saved vectors do (Lightning's own logging would
        # say one step earlier); a standalone `validate` logs them through Lightning, for its table.
        fitting = self.trainer.state.fn == "fit"
        self.log_dict({k: v for k, v in metrics.items() if k != "val/loss"}, logger=not fitting)
        self.log("val/loss", metrics["val/loss"], prog_bar=True, logger=not fitting)
        if fitting and self.logger is not None:
            self.logger.log_metrics({k: float(v) for k, v in metrics.items()}, step=self.global_step)

    # -- optimisation ----------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        fused = hp.fused_adamw if hp.fused_adamw is not None else self.device.type == "cuda"
        optimizer = adamw(self.model, hp.learning_rate, hp.weight_decay, hp.betas, fused)
        decay_steps = hp.lr_decay_steps or self.trainer.max_steps
        if decay_steps <= 0:
            raise MixalignError("set trainer.max_steps or model.lr_decay_steps: the cosine schedule needs an end")
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: lr_at(step, hp.learning_rate, hp.min_lr, hp.warmup_steps, decay_steps) / hp.learning_rate,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
