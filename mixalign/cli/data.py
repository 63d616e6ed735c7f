"""`mixalign prepare` and `mixalign textset`: the config's data tokenized once, and a held-out text set drawn from it."""

from __future__ import annotations

from mixalign.cli.parsing import _data_parser, output_path
from mixalign.data.datamodule import PileMixtureDataModule
from mixalign.llvec.textset import FEW_TEXTS, build_textset, save_textset


def prepare_main(args: list[str]) -> None:
    """Tokenize the config's data once into data.cache_dir (fit, validate and weights reuse it)."""
    cfg = _data_parser("prepare", prepare_main).parse_args(args)
    datamodule = PileMixtureDataModule(**cfg.data.as_dict())
    datamodule.prepare_data()
    datamodule.setup("fit")
    manifest = datamodule.data.manifest
    print(f"prepared data: {datamodule.data.root}")
    print(f"{'domain':<24} {'train docs':>10} {'train tokens':>13} {'val docs':>9} {'val tokens':>11}")
    for domain, splits in manifest["domains"].items():
        train, val = splits["train"], splits["val"]
        print(f"{domain:<24} {train['documents']:>10} {train['tokens']:>13} {val['documents']:>9} {val['tokens']:>11}")
    print(f"tokenizer: {manifest['tokenizer']['spec']}, token dtype: {manifest['dtype']}")


def textset_main(args: list[str]) -> None:
    """A text set from the config's data with the papers' protocol: chunks of documents held out of
    training (data.split_seed, data.val_fraction), drawn with a seed; written atomically."""
    parser = _data_parser("textset", textset_main)
    parser.add_argument("--out", required=True, help="output text set (.jsonl or .jsonl.zst)")
    parser.add_argument("--n", type=int, default=1000, help="how many texts (the papers used 10,000 Pile chunks)")
    parser.add_argument("--textset_seed", type=int, default=0, help="fixes which chunks are drawn")
    parser.add_argument("--stratify", type=bool, default=True, help="as equal a share per domain as availability allows")
    parser.add_argument("--max_bytes", type=int, default=1024, help="documents are cut into chunks of at most this")
    parser.add_argument("--min_bytes", type=int, default=256, help="only chunks longer than this are kept")
    cfg = parser.parse_args(args)
    output_path(cfg.out)
    textset = build_textset(cfg.data.source, cfg.n, cfg.textset_seed, cfg.data.split_seed,
                            cfg.data.val_fraction, cfg.data.domains, cfg.stratify, cfg.max_bytes, cfg.min_bytes,
                            cfg.data.domain_field)
    path = save_textset(textset, cfg.out)
    print(f"{path}: N = {len(textset)} texts, B = {textset.mean_bytes:.1f} bytes, hash {textset.hash[:12]}")
    print(f"{'domain':<24} {'texts':>6} {'candidates':>11}")
    for domain, count in textset.domain_counts().items():
        print(f"{domain:<24} {count:>6} {textset.meta['available'].get(domain, 0):>11}")
    if few := textset.scarce_domains(textset.meta["available"]):
        print(f"warning: fewer than {FEW_TEXTS} texts from {', '.join(few)}: per-domain figures there are noise, "
              "and the mixture method barely sees those domains (lower --min_bytes or add held-out data)")
    print(f"use it with --mixture.textset {path}")
