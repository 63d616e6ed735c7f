"""Domain weights: parse a user's spec, validate it, normalise it to a probability vector.

A spec is `uniform`, `natural` (proportional to training tokens), a mapping `{domain: weight}`,
or a path to a YAML/JSON file holding such a mapping (either at top level or under `weights:`,
which is what `mixalign weights` writes). Domains a mapping leaves out get weight 0.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import yaml

from mixalign.errors import DataError

WeightsSpec = str | Mapping[str, float]


def load_weights_file(path: str | Path) -> dict[str, float]:
    """Read `{domain: weight}` from a YAML or JSON file (top level or under `weights:`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data.weights: weights file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        content = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise DataError(f"data.weights: {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {e}") from None
    if isinstance(content, dict) and isinstance(content.get("weights"), dict):
        content = content["weights"]
    if not isinstance(content, dict) or not content:
        raise DataError(f"data.weights: {path} must hold a mapping of domain -> weight (or one under 'weights:')")
    return content


def resolve_weights(spec: WeightsSpec, domains: Sequence[str], train_tokens: Sequence[int]) -> np.ndarray:
    """Normalised float64 weights in the order of `domains`, after checking every value."""
    if isinstance(spec, str) and spec == "uniform":
        raw = {d: 1.0 for d in domains}
    elif isinstance(spec, str) and spec == "natural":
        raw = dict(zip(domains, map(float, train_tokens)))
    elif isinstance(spec, Mapping):
        raw = dict(spec)
    elif isinstance(spec, (str, Path)):
        if not str(spec).endswith((".yaml", ".yml", ".json")) and not Path(spec).exists():
            raise DataError(
                f"data.weights: {spec!r} is neither 'uniform', 'natural', a mapping, nor an existing .yaml/.json file"
            )
        raw = load_weights_file(spec)
    else:
        raise DataError(f"data.weights: unsupported value {spec!r}")
    return normalise_weights(raw, domains)


def normalise_weights(raw: Mapping[str, float], domains: Sequence[str]) -> np.ndarray:
    odd = [key for key in raw if not isinstance(key, str)]
    if odd:
        raise DataError(f"data.weights: domain names must be strings, got {odd!r}")
    unknown = sorted(set(raw) - set(domains))
    if unknown:
        raise DataError(f"data.weights: unknown domain(s) {unknown}; known domains: {list(domains)}")
    weights = np.zeros(len(domains), dtype=np.float64)
    for i, domain in enumerate(domains):
        value = raw.get(domain, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise DataError(f"data.weights: weight of {domain!r} must be a finite number, got {value!r}")
        if value < 0:
            raise DataError(f"data.weights: weight of {domain!r} is negative ({value})")
        weights[i] = value
    if weights.sum() <= 0:
        raise DataError(f"data.weights: all weights are zero for domains {list(domains)}")
    weights /= weights.max()  # finite weights whose sum overflows (1e308 + 1e308) keep their proportions
    return weights / weights.sum()
