"""Shared helpers for the benchmark scripts: machine facts, peak memory, tables, atomic JSON results.

Every benchmark writes `benchmarks/results/<name>.json` through `mixalign.io.write_bytes_atomic`,
so a killed run never leaves a truncated result behind.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml

from mixalign.io import write_bytes_atomic

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MEASURED_CODE = ("mixalign", "configs")  # what a figure depends on: its code hash covers these folders
DEFAULT_CACHE = os.environ.get("MIXALIGN_BENCH_CACHE", "/tmp/mixalign-bench/data_cache")

# configs/pile.yaml (the demo job): model and data sizes every benchmark uses unless told otherwise.
PILE_MODEL = dict(n_layer=4, n_head=4, n_embd=128, block_size=128, dropout=0.0)
PILE_OPTIM = dict(learning_rate=2.0e-3, min_lr=2.0e-4, warmup_steps=50, weight_decay=0.1, betas=(0.9, 0.95))
PILE_DATA = dict(source="demo", tokenizer="demo-4k", weights="uniform", block_size=128, batch_size=16,
                 val_fraction=0.1, val_windows_per_domain=16, seed=1337)
PILE_TRAINER = dict(log_every_n_steps=10, gradient_clip_val=1.0, precision="32-true")
SEED = 1337


def read_config(name: str) -> dict:
    """A shipped config (`configs/<name>`) as a plain dict: its `config:` base read first, then each of its dotted
    keys set on it, as jsonargparse composes them (tests/test_configs.py checks that the two agree on every
    shipped config). A composed file that sets a whole group is refused: jsonargparse would replace the group."""
    raw = yaml.safe_load((REPO / "configs" / name).read_text(encoding="utf-8"))
    config = read_config(raw.pop("config")) if "config" in raw else {}
    if config and any(isinstance(value, dict) and "." not in key for key, value in raw.items()):
        raise ValueError(f"configs/{name}: a composed config sets fields by dotted keys, not whole groups")
    for key, value in raw.items():
        *groups, leaf = key.split(".")
        node = config
        for group in groups:
            node = node.setdefault(group, {})
        node[leaf] = value
    return config


def code_hash(root: str | os.PathLike = REPO) -> str:
    """A hash of every file under mixalign/ and configs/ (paths and bytes): the code a figure measures."""
    files = [p for folder in MEASURED_CODE for p in sorted((Path(root) / folder).rglob("*"))
             if p.is_file() and "__pycache__" not in p.parts]
    return hash_files((p.relative_to(root).as_posix(), p.read_bytes()) for p in files)


def hash_files(files) -> str:
    """The hash of (relative posix path, bytes) pairs, in the order given (code_hash: folder by folder of
    MEASURED_CODE, each sorted)."""
    digest = hashlib.sha256()
    for name, data in files:
        digest.update(name.encode() + b"\0" + data + b"\0")
    return digest.hexdigest()[:16]


def code_state(root: str | os.PathLike = REPO) -> dict[str, str]:
    """The commit checked out and the hash of the code measured (they differ in meaning when the tree is edited)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    return {"commit": head.stdout.strip() or "unknown", "code_hash": code_hash(root)}


def logged_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar a run logged to TensorBoard: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def add_run_arguments(parser, quick_help: str) -> None:
    """--threads, --cache-dir and --quick: the options every data-backed benchmark takes."""
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: stable on a shared 2-core machine; 0 = torch default)")
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE, help="prepared-data cache")
    parser.add_argument("--quick", action="store_true", help=quick_help)


def set_threads(threads: int) -> None:
    """Pin torch's intra-op threads; 0 keeps torch's default."""
    if threads:
        torch.set_num_threads(threads)


LOAD_AT_START = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # this module loads as a script starts


def measured_on(record: dict, threads: bool = True) -> str:
    """When, on what and under what load a record was measured, as one sentence for the docs (threads: the
    torch threads it ran with, for a script that does not vary them)."""
    m = record["machine"]
    load = m.get("load_average_at_start")
    return (f"Measured by `{record['command']}` on {m['date_utc'].replace('T', ' ').rstrip('Z')} UTC: {m['nproc']} cores "
            f"({m['cpu_model']}), torch {m['torch']}" + (f", {m['torch_threads']} torch thread(s)" if threads else "")
            + (f", load average {load:.2f} when it started" if load is not None else "") + ".")


def machine() -> dict[str, Any]:
    """nproc, CPU model, RAM, versions, date: recorded next to every figure."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    import lightning
    import numpy

    info = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": cpu,
        "ram_gib": ram_gib,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "numpy": numpy.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_at_start": LOAD_AT_START,
    }
    return info


def peak_rss_mib() -> float:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.3e}"
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
    return str(value)


def write_result(name: str, payload: dict[str, Any], out_dir: str | os.PathLike | None = None) -> Path:
    """Write `<out_dir>/<name>.json` atomically, with the machine facts and the command line."""
    out = Path(out_dir) if out_dir else RESULTS
    payload = {
        "benchmark": name,
        "command": " ".join(["python", *[_rel(a) for a in sys.argv]]),
        "machine": machine(),
        **code_state(),
        **payload,
    }
    path = out / f"{name}.json"
    write_bytes_atomic(path, (json.dumps(payload, indent=2, sort_keys=False) + "\n").encode("utf-8"))
    return path


def _rel(arg: str) -> str:
    try:
        return str(Path(arg).resolve().relative_to(Path.cwd()))
    except ValueError:
        return arg


def prepared_datamodule(cache_dir: str = DEFAULT_CACHE, **overrides):
    """The demo config's `PileMixtureDataModule`, prepared (tokenized once into `cache_dir`) and set up."""
    from mixalign.data.datamodule import PileMixtureDataModule

    dm = PileMixtureDataModule(**{**PILE_DATA, **overrides}, cache_dir=cache_dir)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def provenance_line(result: str | os.PathLike) -> str:
    """The comment a published block carries: the results file it was written from, its commit and code hash
    (`benchmarks/stale.py` compares the hash with the code as it is now)."""
    result = Path(result).resolve()
    record = json.loads(result.read_text(encoding="utf-8"))
    shown = result.relative_to(REPO).as_posix() if result.is_relative_to(REPO) else str(result)
    return f"<!-- measured: {shown} commit {record.get('commit')} code {record.get('code_hash')} -->"


def replace_section(path: str | os.PathLike, name: str, text: str, result: str | os.PathLike) -> None:
    """Put `text` between the markers `<!-- NAME:BEGIN -->` and `<!-- NAME:END -->` of a doc, atomically,
    headed by the provenance of the results file `result` it was written from.

    The README's and BENCHMARKS.md's figures are written by the scripts that measure them.
    """
    path = Path(path)
    doc = path.read_text(encoding="utf-8")
    begin, end = f"<!-- {name}:BEGIN -->", f"<!-- {name}:END -->"
    if begin not in doc or end not in doc:
        raise ValueError(f"{path}: no {begin} ... {end} section to fill")
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    body = f"{provenance_line(result)}\n{text.strip()}"
    write_bytes_atomic(path, f"{head}{begin}\n{body}\n{end}{tail}".encode("utf-8"))
