#!/usr/bin/env python
"""Build the shipped demo tasks: 4-way "true continuation" multiple choice, one task per domain.

Items come only from text that neither training nor the log-likelihood vectors ever see: documents
held out of training (the configs' split: `is_heldout(text, 1337, 0.1)`), cut into the text set's
1024-byte chunks, minus every chunk the shipped text set holds; an item whose text still occurs in a training
document or a text-set text (the corpus repeats some documents) is dropped. Consecutive leftover chunks of a
document are joined, and each run is cut into items: a passage of about `--passage` characters and
its true continuation of about `--continuation` characters, both cut at whitespace (the
continuation starts with it, so passage + continuation is the original text). The three wrong
choices are continuations of other items of the same domain. Domains with fewer than `--min-items`
items get no task (README says which). The same corpus, text set and --seed give identical files.

    python scripts/build_demo_tasks.py            # writes mixalign/assets/tasks/
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixalign.assets import DEMO_CORPUS, asset_path  # noqa: E402
from mixalign.data.prepare import is_heldout  # noqa: E402
from mixalign.data.reader import read_documents  # noqa: E402
from mixalign.io import write_bytes_atomic  # noqa: E402
from mixalign.llvec.textset import (  # noqa: E402
    DEMO_TEXTSET,
    load_textset,
    resolve_textset,
    utf8_chunks,
)

SPLIT_SEED, VAL_FRACTION, CHUNK_BYTES = 1337, 0.1, 1024  # the configs' data split and the text set's chunks
N_CHOICES = 4


def leftover_runs(textset_texts: set[str]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Per domain, the held-out text outside the text set (runs of consecutive leftover chunks), and
    the training documents (an item found in one of them, or in a text-set text, is dropped)."""
    runs: dict[str, list[str]] = {}
    training: dict[str, list[str]] = {}
    for doc in read_documents(DEMO_CORPUS):
        if not is_heldout(doc.text, SPLIT_SEED, VAL_FRACTION):
            training.setdefault(doc.domain, []).append(doc.text)
            continue
        current = []
        for chunk in utf8_chunks(doc.text, CHUNK_BYTES) + [None]:  # None closes the last run
            if chunk is not None and chunk not in textset_texts:
                current.append(chunk)
            elif current:
                runs.setdefault(doc.domain, []).append("".join(current))
                current = []
    return runs, training


def cut_at_whitespace(text: str, start: int, length: int) -> int | None:
    """The first whitespace at or after start + length that follows a non-space (None if none)."""
    match = re.compile(r"(?<=\S)\s").search(text, start + length)
    return match.start() if match else None


def passages(run: str, passage: int, continuation: int) -> list[tuple[str, str]]:
    """Consecutive (passage, continuation) pairs cut from one run of text."""
    pairs, start = [], 0
    while True:
        middle = cut_at_whitespace(run, start, passage)
        end = None if middle is None else cut_at_whitespace(run, middle, continuation)
        if end is None:
            return pairs
        text, true = run[start:middle], run[middle:end]
        if text.strip() and true.strip() and len(text) <= 2 * passage and len(true) <= 3 * continuation:
            pairs.append((text, true))  # (long unbroken strings, such as ASCII art, are left out)
        start = end
        while start < len(run) and run[start].isspace():  # the next passage starts at a word
            start += 1


def items(pairs: list[tuple[str, str]], rng: np.random.Generator) -> list[dict]:
    """Multiple-choice items: the true continuation among three drawn from the other pairs."""
    out = []
    for i, (text, true) in enumerate(pairs):
        others = [j for j in rng.permutation(len(pairs)) if j != i and pairs[j][1] != true][: N_CHOICES - 1]
        choices = [true] + [pairs[j][1] for j in others]
        order = rng.permutation(N_CHOICES)
        out.append({"passage": text, "choices": [choices[k] for k in order], "gold": int(np.argmax(order == 0))})
    return out


def task_yaml(name: str, data_file: str, n_items: int) -> str:
    """An lm-eval local task (0.4 format); data_files is relative to this YAML (mixalign eval resolves it)."""
    return (
        f"# {n_items} items; built by scripts/build_demo_tasks.py (see README.md here)\n"
        f"task: {name}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        f"    test: {data_file}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: passage\n"
        "doc_to_choice: choices\n"
        "doc_to_target: gold\n"
        'target_delimiter: ""  # each choice starts with the whitespace that followed the passage\n'
        "metric_list:\n"
        "  - metric: acc\n"
        "    aggregation: mean\n"
        "    higher_is_better: true\n"
        "  - metric: acc_norm\n"
        "    aggregation: mean\n"
        "    higher_is_better: true\n"
    )


def readme(counts: dict[str, int], written: dict[str, int], args) -> str:
    """The tasks' README: sources, protocol, seed, counts, chance (written by this script)."""
    rows = "\n".join(f"| {d} | {counts[d]} | {f'demo_{d}' if d in written else 'none (too few)'} | {written.get(d, 0)} |"
                     for d in sorted(counts))
    return f"""# Shipped demo tasks

Four-way multiple choice, one lm-eval task per domain of the demo corpus: given a passage of about
{args.passage} characters, choose its true continuation (about {args.continuation} characters) among four; the three
wrong ones are continuations of other passages of the same domain. Chance is 25% (acc); lm-eval's
acc_norm (log-likelihood per byte of the choice) is logged too. Run them with
`mixalign eval --target T --models M ... --tasks demo` (or `demo_<domain>`).

Rebuilt by `python scripts/build_demo_tasks.py --seed {args.seed}` (this file included; identical bytes).

## Where the text comes from
Only from text that neither training nor the log-likelihood vectors see: documents held out of
training by the configs' split (`is_heldout(text, split_seed=1337, val_fraction=0.1)`), cut into the
text set's 1024-byte chunks, minus every chunk of the shipped text set (`demo`); an item whose text
still occurs in a training document or a text-set text (the corpus repeats some documents) is
dropped. The text set took most held-out text, so some domains have too little left for a task.

| domain | items available | task | items |
|---|---|---|---|
{rows}

A task's accuracy has a standard error of at most sqrt(0.25 / n): {100 * (0.25 / min(written.values())) ** 0.5:.1f} points
for the smallest task ({min(written.values())} items), {100 * (0.25 / max(written.values())) ** 0.5:.1f} for the largest ({max(written.values())}).
The YAML files are lm-eval 0.4 local tasks; their `data_files` are relative to the YAML, which
`mixalign eval` resolves (plain `lm_eval` resolves them from the current directory).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(asset_path("tasks")))
    parser.add_argument("--seed", type=int, default=0, help="draws the wrong choices and their order")
    parser.add_argument("--passage", type=int, default=100, help="characters of passage (then to a space)")
    parser.add_argument("--continuation", type=int, default=30, help="characters of continuation (then to a space)")
    parser.add_argument("--min-items", type=int, default=100, help="a domain with fewer items gets no task")
    parser.add_argument("--max-items", type=int, default=600)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    textset = load_textset(resolve_textset(DEMO_TEXTSET))
    runs, training = leftover_runs(set(textset.texts))
    counts, written = {}, {}
    for domain in sorted(runs):
        seen = training.get(domain, []) + [t for t, d in zip(textset.texts, textset.domains) if d == domain]
        pairs = [p for run in runs[domain] for p in passages(run, args.passage, args.continuation)
                 if not any(p[0] + p[1] in text for text in seen)]  # duplicated documents repeat text
        counts[domain] = len(pairs)
        if len(pairs) < args.min_items:
            continue
        rng = np.random.default_rng([args.seed, len(domain), *domain.encode()])
        keep = sorted(rng.permutation(len(pairs))[: args.max_items].tolist())
        rows = items([pairs[k] for k in keep], rng)
        name = f"demo_{domain}"
        write_bytes_atomic(out / f"{name}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
        write_bytes_atomic(out / f"{name}.yaml", task_yaml(name, f"{name}.jsonl", len(rows)).encode())
        written[domain] = len(rows)
        print(f"{name}: {len(rows)} items (of {len(pairs)})")
    write_bytes_atomic(out / "README.md", readme(counts, written, args).encode())
    print("items available per domain:", json.dumps(counts))


if __name__ == "__main__":
    main()
