"""`PileMixtureDataModule`: prepared Pile-format data, sampled by domain weights."""

from __future__ import annotations

from typing import Literal, Mapping

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from mixalign.assets import SHIPPED_TOKENIZERS
from mixalign.data.prepare import ENCODE_CHARS, PrepareConfig, PreparedData, SplitTokens, prepare
from mixalign.data.reader import DEFAULT_DOMAIN_FIELD
from mixalign.data.sampling import BatchIndices, FixedWindows, MixtureBatches
from mixalign.data.schedule import WeightSchedule
from mixalign.data.tokenizer import load_tokenizer, vocabulary_id
from mixalign.data.weights import resolve_weights
from mixalign.errors import DataError
from mixalign.paths import InputPath, plain
from mixalign.units import DEFAULT_SEED

ALIGNED = "aligned"  # data.weights value: computed from mixture.target before (and during) training


class PileMixtureDataModule(L.LightningDataModule):
    """Pile-format documents grouped by domain; training windows drawn from domain weights.

    Args:
        source: shard file(s), directory, glob, a saved HF dataset, or ``demo`` (the shipped corpus).
            Paths in a config file are relative to that file; a glob is matched from the current directory.
            ``{domain: path or glob}`` reads one folder or file set per domain (no domain field needed).
        tokenizer: shipped tokenizer name (``gpt2``, ``demo-4k``) or path to a ``tokenizer.json``;
            ``null`` trains a byte-level BPE of ``bpe_vocab_size`` on the training documents.
        bpe_vocab_size: vocabulary of the BPE to train when ``tokenizer`` is null.
        domains: the domains to use (default: every domain in the data).
        weights: ``aligned`` (computed toward ``mixture.target``: the method), ``uniform``, ``natural``
            (token-proportional), ``{domain: weight}``, or a YAML/JSON file (``mixalign weights`` writes one).
        block_size: tokens per training window (must not exceed the model's).
        batch_size: windows per batch (per device).
        val_fraction: share of documents held out (by document hash) for validation and text sets.
        val_windows_per_domain: fixed validation windows per domain.
        seed: fixes the training data order (which windows, from which domains, in which batch).
        split_seed: fixes which documents are held out; text sets are built with the same value.
        cache_dir: where prepared data is stored and reused.
        num_workers: validation loader worker processes (training batches are made in the main process
            at their step, so a mixture computed mid-run applies exactly; the sampler is thousands of
            times faster than training, BENCHMARKS.md).
        num_proc: processes tokenizing shards in parallel during preparation.
        skip_malformed: skip malformed lines with a counted warning instead of failing.
        domain_field: dotted path to each record's domain (a column for Parquet): ``meta.pile_set_name``
            (the Pile), ``meta.redpajama_set_name`` (SlimPajama), ``source`` (Dolma), ``domain``.
        encode_chars: the most characters tokenized at once; a longer document is tokenized in pieces cut
            before a space, so preparation's memory stays bounded (~150 bytes a character) on any line.
    """

    def __init__(
        self,
        source: Literal["demo"] | InputPath | list[InputPath] | dict[str, InputPath | list[InputPath] | str] | str = "demo",
        tokenizer: Literal[SHIPPED_TOKENIZERS] | InputPath | None = "demo-4k",
        bpe_vocab_size: int | None = None,
        domains: list[str] | None = None,
        weights: Literal["aligned", "uniform", "natural"] | Mapping[str, float] | InputPath = "uniform",
        block_size: int = 256,
        batch_size: int = 16,
        val_fraction: float = 0.1,
        val_windows_per_domain: int = 16,
        seed: int = DEFAULT_SEED,
        split_seed: int = DEFAULT_SEED,
        cache_dir: str = "data_cache",
        num_workers: int = 0,
        num_proc: int = 1,
        skip_malformed: bool = False,
        domain_field: str = DEFAULT_DOMAIN_FIELD,
        encode_chars: int = ENCODE_CHARS,
    ):
        super().__init__()
        _check_positive(block_size=block_size, batch_size=batch_size, val_windows_per_domain=val_windows_per_domain,
                        encode_chars=encode_chars)
        if not 0 < val_fraction < 1:
            raise DataError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
        if tokenizer is None and bpe_vocab_size is None:
            raise DataError("data: set either data.tokenizer or data.bpe_vocab_size (to train a BPE)")
        if tokenizer is not None and bpe_vocab_size is not None:
            raise DataError("data: set only one of data.tokenizer and data.bpe_vocab_size")
        source, tokenizer, weights = plain(source), plain(tokenizer), plain(weights)
        self.save_hyperparameters()
        self.config = PrepareConfig(
            source=source,
            tokenizer=tokenizer,
            bpe_vocab_size=bpe_vocab_size,
            domains=tuple(domains) if domains else None,
            val_fraction=val_fraction,
            split_seed=split_seed,
            skip_malformed=skip_malformed,
            domain_field=domain_field,
            encode_chars=encode_chars,
        )
        # Known before any data is read, so the CLI can link it into the model's config.
        self.vocab_size = load_tokenizer(tokenizer).get_vocab_size() if tokenizer else bpe_vocab_size
        self.weights_spec = weights
        self.block_size = block_size
        self.batch_size = batch_size
        self.data: PreparedData | None = None
        self.schedule: WeightSchedule | None = None  # the weights in force at each step
        self._streams: dict[tuple, MixtureBatches] = {}

    def prepare_data(self) -> None:
        prepare(self.config, self.hparams.cache_dir, self.hparams.num_proc)

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        self.data = prepare(self.config, self.hparams.cache_dir, self.hparams.num_proc)
        self.schedule = WeightSchedule(self.domains)
        if not self.aligned:
            self.schedule.set(0, self._checked_weights(self.weights_spec))

    @property
    def domains(self) -> list[str]:
        return self.data.domains

    @property
    def aligned(self) -> bool:
        """The weights are computed during the run (`data.weights: aligned`), not given."""
        return isinstance(self.weights_spec, str) and self.weights_spec == ALIGNED

    @property
    def weights(self) -> np.ndarray:
        """The mixture in force at the current step."""
        return self.schedule.at(self.trainer.global_step if self.trainer else 0)

    def set_weights(self, step: int, spec) -> None:
        """Train on `spec` (any `data.weights` value but ``aligned``) from `step` on."""
        self.schedule.set(step, self._checked_weights(spec))

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

    def train_dataset(self, weights: np.ndarray, rank: int = 0, seed: int | None = None) -> MixtureBatches:
        """Training batches from fixed `weights` and `seed` (default: data.seed), by index."""
        return MixtureBatches(
            open_tokens=SplitTokens(self.data.root, tuple(self.domains), "train"),
            lengths=[self.data.count(d, "train") for d in self.domains],
            weights=weights,
            block_size=self.block_size,
            batch_size=self.batch_size,
            seed=self.hparams.seed if seed is None else seed,
            rank=rank,
        )

    def train_dataloader(self) -> DataLoader:
        # Batches already consumed: the checkpoint restored `global_step` before this is called.
        trainer = self.trainer
        start = trainer.global_step * trainer.accumulate_grad_batches if trainer else 0
        return DataLoader(BatchIndices(start), batch_size=None)

    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """A training batch index becomes its batch, with the weights in force at its step."""
        if "index" not in batch:
            return batch  # a validation batch
        index = int(batch["index"])
        step = index // self.trainer.accumulate_grad_batches
        weights = self.schedule.at(step)
        key = (self.trainer.global_rank, weights.tobytes())
        if key not in self._streams:
            self._streams[key] = self.train_dataset(weights, rank=self.trainer.global_rank)
        return self._streams[key].batch(index)

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

    @property
    def tokenizer_id(self) -> str:
        """Identity of the data's vocabulary: models sharing it can be compared token by token."""
        return vocabulary_id(load_tokenizer(self.data.tokenizer_path))

    def encode(self, texts) -> list[list[int]]:
        """Token ids of `texts` under the prepared data's tokenizer (no special tokens added)."""
        tokenizer = load_tokenizer(self.data.tokenizer_path)
        return [e.ids for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def state_dict(self) -> dict:
        """The weights schedule, so that resuming trains on the same mixture at every step."""
        return self.schedule.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.schedule.load_state_dict(state, self._checked_weights)

    def _loader(self, dataset, batch_size) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value <= 0:
            raise DataError(f"data.{name} must be a positive integer, got {value!r}")
