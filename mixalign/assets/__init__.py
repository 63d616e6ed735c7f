"""Files shipped inside the package: the demo corpus and tokenizers, found via importlib.resources."""

from importlib.resources import files
from pathlib import Path

DEMO_CORPUS = "demo"
SHIPPED_TOKENIZERS = ("gpt2", "demo-4k")


def asset_path(*parts: str) -> Path:
    """Path of a shipped asset (works for editable checkouts and installed wheels alike)."""
    return Path(str(files(__name__).joinpath(*parts)))


def demo_corpus_dir() -> Path:
    return asset_path("demo_corpus")
