"""`PileMixtureDataModule`: prepared Pile-format data, sampled by domain weights."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from mixalign.data.prepare import PreparedData, PrepareConfig, SplitTokens, prepare
from mixalign.data.reader import DataError
from mixalign.data.sampling import FixedWindows, MixtureBatches
from mixalign.data.tokenizer import load_tokenizer
from mixalign.data.weights import resolve_weights


class PileMixtureDataModule(L.LightningDataModule):
    """Pile-format documents grouped by domain; training windows drawn from domain weights.

    Args:
        source: shard file(s), directory, glob, a saved HF dataset, or ``demo`` (the shipped corpus).
        tokenizer: shipped tokenizer name (``gpt2``, ``demo-4k``) or path to a ``tokenizer.json``;
            ``null`` trains a byte-level BPE of ``bpe_vocab_size`` on the training documents.
        bpe_vocab_size: vocabulary of the BPE to train when ``tokenizer`` is null.
        domains: the domains to use (default: every domain in the data).
        weights: ``uniform``, ``natural`` (token-proportional), ``{domain: weight}``, or a YAML/JSON file.
        block_size: tokens per training window (must not exceed the model's).
        batch_size: windows per batch (per device).
        val_fraction: share of documents held out (by document hash) for validation and text sets.
        val_windows_per_domain: fixed validation windows per domain.
        seed: fixes the training data order (which windows, from which domains, in which batch).
        split_seed: fixes which documents are held out; text sets are built with the same value.
        cache_dir: where prepared data is stored and reused.
        num_workers: dataloader worker processes.
        num_proc: processes tokenizing shards in parallel during preparation.
        skip_malformed: skip malformed lines with a counted warning instead of failing.
    """

    def __init__(
        self,
        source: str | list[str] = "demo",
        tokenizer: str | None = "demo-4k",
        bpe_vocab_size: int | None = None,
        domains: list[str] | None = None,
        weights: str | Mapping[str, float] = "uniform",
        block_size: int = 256,
        batch_size: int = 16,
        val_fraction: float = 0.1,
        val_windows_per_domain: int = 16,
        seed: int = 1337,
        split_seed: int = 1337,
        cache_dir: str = "data_cache",
        num_workers: int = 0,
        num_proc: int = 1,
        skip_malformed: bool = False,
    ):
        super().__init__()
        _check_positive(block_size=block_size, batch_size=batch_size, val_windows_per_domain=val_windows_per_domain)
        if not 0 < val_fraction < 1:
            raise DataError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
        if tokenizer is None and bpe_vocab_size is None:
            raise DataError("data: set either data.tokenizer or data.bpe_vocab_size (to train a BPE)")
        if tokenizer is not None and bpe_vocab_size is not None:
            raise DataError("data: set only one of data.tokenizer and data.bpe_vocab_size")
        self.save_hyperparameters()
        self.config = PrepareConfig(
            source=source,
            tokenizer=tokenizer,
            bpe_vocab_size=bpe_vocab_size,
            domains=tuple(domains) if domains else None,
            val_fraction=val_fraction,
            split_seed=split_seed,
            skip_malformed=skip_malformed,
        )
        # Known before any data is read, so the CLI can link it into the model's config.
        self.vocab_size = load_tokenizer(tokenizer).get_vocab_size() if tokenizer else bpe_vocab_size
        self.weights_spec = weights
        self.block_size = block_size
        self.batch_size = batch_size
        self.data: PreparedData | None = None
        self.schedule: dict[int, np.ndarray] = {}  # first step -> weights in force from there on
        self._pinned: dict[int, np.ndarray] = {}

    def prepare_data(self) -> None:
        prepare(self.config, self.hparams.cache_dir, self.hparams.num_proc)

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        self.data = prepare(self.config, self.hparams.cache_dir, self.hparams.num_proc)
        self.set_weights(self.weights_spec)

    @property
    def domains(self) -> list[str]:
        return self.data.domains

    def set_weights(self, spec) -> None:
        """The weights from the config (replaced by a checkpoint's schedule on resume)."""
        self.schedule = {0: self._checked_weights(spec)}

    def pin_weights(self, step: int, spec) -> None:
        """Weights computed in this session for training from `step` on; they survive checkpoint restore."""
        self.schedule[step] = self._pinned[step] = self._checked_weights(spec)

    def weights_at(self, step: int) -> np.ndarray:
        return self.schedule[max(s for s in self.schedule if s <= step)]

    @property
    def weights(self) -> np.ndarray:
        return self.weights_at(self.trainer.global_step if self.trainer else 0)

    def _checked_weights(self, spec) -> np.ndarray:
        train_tokens = [self.data.count(d, "train") for d in self.domains]
        weights = resolve_weights(spec, self.domains, train_tokens)
        for domain, weight, tokens in zip(self.domains, weights, train_tokens):
            if weight > 0 and tokens < self.block_size + 1:
                raise DataError(
                    f"domain {domain!r} has {tokens} training tokens, fewer than one window of "
                    f"data.block_size + 1 = {self.block_size + 1}; give it weight 0 or lower block_size"
                )
        return weights

    def train_dataset(self, start: int = 0, rank: int = 0, weights: np.ndarray | None = None,
                      seed: int | None = None) -> MixtureBatches:
        """Training batches from `weights` (default: the weights in force) and `seed` (default: data.seed)."""
        return MixtureBatches(
            open_tokens=SplitTokens(self.data.root, tuple(self.domains), "train"),
            lengths=[self.data.count(d, "train") for d in self.domains],
            weights=self.weights if weights is None else weights,
            block_size=self.block_size,
            batch_size=self.batch_size,
            seed=self.hparams.seed if seed is None else seed,
            rank=rank,
            start=start,
        )

    def train_dataloader(self) -> DataLoader:
        # Batches already consumed: the checkpoint restored `global_step` before this is called.
        trainer = self.trainer
        start = trainer.global_step * trainer.accumulate_grad_batches if trainer else 0
        dataset = self.train_dataset(start=start, rank=trainer.global_rank if trainer else 0)
        return self._loader(dataset, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        tokens = [self.data.tokens(d, "val") for d in self.domains]
        dataset = FixedWindows(tokens, self.block_size, self.hparams.val_windows_per_domain)
        return self._loader(dataset, batch_size=self.batch_size)

    def check_heldout(self, textset) -> None:
        """A text set drawn from this data must come from documents this split holds out of training."""
        meta = textset.meta
        if meta.get("source") != self.hparams.source:
            return  # texts from another corpus cannot leak from this training data
        split = {"seed": self.hparams.split_seed, "val_fraction": self.hparams.val_fraction}
        if meta.get("split") != split:
            raise DataError(
                f"text set was built from held-out documents of split {meta.get('split')}, but data uses split "
                f"{split} (data.split_seed, data.val_fraction): some of its texts would be training documents"
            )

    def encode(self, texts) -> list[list[int]]:
        """Token ids of `texts` under the prepared data's tokenizer (no special tokens added)."""
        tokenizer = load_tokenizer(self.data.tokenizer_path)
        return [e.ids for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def state_dict(self) -> dict:
        """The weights schedule, so that resuming trains on the same mixture at every step."""
        return {"schedule": {step: dict(zip(self.domains, map(float, w))) for step, w in self.schedule.items()}}

    def load_state_dict(self, state: dict) -> None:
        if state.get("schedule"):
            self.schedule = {int(step): self._checked_weights(w) for step, w in state["schedule"].items()}
        self.schedule.update(self._pinned)

    def _loader(self, dataset, batch_size) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available()
        )


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value <= 0:
            raise DataError(f"data.{name} must be a positive integer, got {value!r}")
