"""List every published figure measured on other code than the code as it is now.

A block of README.md or BENCHMARKS.md between `<!-- NAME:BEGIN -->` and `<!-- NAME:END -->` is
written by a benchmark script, headed by the provenance of the results file it came from
(`<!-- measured: FILE commit C code H -->`, see `_common.replace_section`); H hashes mixalign/
and configs/ as they were measured. Every results file the docs point to (`benchmarks/results/X.*`)
is checked the same way through its JSON record. Prints one line per stale or unrecorded figure and
exits 1; prints nothing and exits 0 when every figure describes this code.

    python benchmarks/stale.py            # the before-stop routine runs it
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REPO, code_hash  # noqa: E402

DOCS = ("README.md", "BENCHMARKS.md")
BLOCK = re.compile(r"<!-- (\w+):BEGIN -->\n(.*?)<!-- \1:END -->", re.S)
PROVENANCE = re.compile(r"<!-- measured: (\S+) commit (\S+) code (\S+) -->")
CITED = re.compile(r"benchmarks/results/([\w.-]+?)(?:-map)?\.(?:json|md|png)")


def stale_blocks(doc: Path, now: str) -> list[str]:
    """The doc's generated blocks that carry no provenance or another code hash."""
    found = []
    for name, body in BLOCK.findall(doc.read_text(encoding="utf-8")):
        mark = PROVENANCE.search(body)
        if mark is None:
            found.append(f"{doc.name} {name}: records no code hash (measured before hashes were kept); rerun its script")
        elif mark.group(3) != now:
            found.append(f"{doc.name} {name}: measured at {mark.group(2)} on other code ({mark.group(1)}); "
                         "rerun its script")
    return found


def stale_results(root: Path, docs: list[Path], now: str) -> list[str]:
    """The results files the docs cite whose JSON record carries no or another code hash."""
    cited = sorted({stem for doc in docs for stem in CITED.findall(doc.read_text(encoding="utf-8"))})
    found = []
    for stem in cited:
        record = root / "benchmarks" / "results" / f"{stem}.json"
        if not record.exists():
            continue  # a figure without a JSON record (a profile's text) is dated by the block citing it
        measured = json.loads(record.read_text(encoding="utf-8")).get("code_hash")
        if measured != now:
            why = "records no code hash" if measured is None else "measured on other code"
            found.append(f"benchmarks/results/{stem}.json (cited in the docs): {why}; rerun its script")
    return found


def stale(root: Path = REPO) -> list[str]:
    now = code_hash(root)
    docs = [root / name for name in DOCS if (root / name).exists()]
    return [line for doc in docs for line in stale_blocks(doc, now)] + stale_results(root, docs, now)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=REPO, help="the checkout to check (default: this one)")
    found = stale(parser.parse_args().root)
    for line in found:
        print(line)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
