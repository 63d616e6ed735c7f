"""List every published figure measured on other code than the code as it is now.

A block of README.md or BENCHMARKS.md between `<!-- NAME:BEGIN -->` and `<!-- NAME:END -->` is
written by a benchmark script, headed by the provenance of the results file it came from
(`<!-- measured: FILE commit C code H -->`, see `_common.replace_section`); H hashes mixalign/
and configs/ as they were measured. Every results file the docs point to (`benchmarks/results/X.*`)
is checked the same way through its JSON record. Prints one line per stale or unrecorded figure and
exits 1; prints nothing and exits 0 when every figure describes this code.

A figure is stale when the code *it measured* changed: when H is the hash of commit C's tree (the run
was on committed code), only the mixalign modules its script imports (transitively, at C; those it
runs as `python -m mixalign` too), configs/ and mixalign/assets/ are compared with the checkout;
otherwise the whole of mixalign/ and configs/.

    python benchmarks/stale.py            # the before-stop routine runs it
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import MEASURED_CODE, REPO, code_hash, hash_files  # noqa: E402

DOCS = ("README.md", "BENCHMARKS.md")
BLOCK = re.compile(r"<!-- (\w+):BEGIN -->\n(.*?)<!-- \1:END -->", re.S)
PROVENANCE = re.compile(r"<!-- measured: (\S+) commit (\S+) code (\S+) -->")
CITED = re.compile(r"benchmarks/results/([\w.-]+?)(?:-map)?\.(?:json|md|png)")


class Commit:
    """The files of one commit, read with git (None where the checkout is not a git repository)."""

    def __init__(self, root: Path, commit: str | None):
        self.root, self.commit = root, commit

    def git(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=self.root, capture_output=True)

    def files(self, *folders: str) -> list[str]:
        listed = self.git("ls-tree", "-r", "--name-only", self.commit, "--", *folders)
        return [line for line in listed.stdout.decode().splitlines() if "__pycache__" not in line]

    def read(self, path: str) -> bytes | None:
        shown = self.git("show", f"{self.commit}:{path}")
        return shown.stdout if shown.returncode == 0 else None

    def tree_hash(self) -> str | None:
        """code_hash of mixalign/ and configs/ as committed (None: no such commit here)."""
        if self.git("rev-parse", "--verify", "--quiet", f"{self.commit}^{{commit}}").returncode != 0:
            return None
        names = [n for folder in MEASURED_CODE for n in sorted(self.files(folder), key=PurePosixPath)]
        return hash_files((name, self.read(name)) for name in names)

    def unchanged(self, paths: list[str]) -> bool:
        """The checkout's copies of `paths` equal the commit's (a deleted or edited one is a change)."""
        return self.git("diff", "--quiet", self.commit, "--", *paths).returncode == 0


def imported(source: bytes) -> set[str]:
    """The mixalign modules a Python source imports anywhere (also inside functions), `mixalign.__main__`
    when it runs `python -m mixalign` (a list or tuple with "-m", "mixalign"), and those a script names in
    a `MEASURES = (...)` tuple (what it runs some other way)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MEASURES" for t in node.targets):
            found |= {e.value for e in getattr(node.value, "elts", []) if isinstance(e, ast.Constant)}
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mixalign"):
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mixalign")}
        elif isinstance(node, (ast.List, ast.Tuple)):
            words = [e.value for e in node.elts if isinstance(e, ast.Constant)]
            if any(words[i:i + 2] == ["-m", "mixalign"] for i in range(len(words))):
                found.add("mixalign.__main__")
    return found


def measured_files(commit: Commit, script: str) -> list[str]:
    """Every file the script's figures depend on, at the commit: its mixalign modules (with their packages'
    __init__), transitively, plus configs/ and mixalign/assets/."""
    present = set(commit.files("mixalign"))
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        if path in seen or (source := commit.read(path)) is None:
            continue
        seen.add(path)
        for module in imported(source):
            parts = module.split(".")
            for depth in range(1, len(parts) + 1):
                stem = "/".join(parts[:depth])
                todo += [f for f in (f"{stem}.py", f"{stem}/__init__.py") if f in present]
    return sorted((seen - {script}) | set(commit.files("configs", "mixalign/assets")))


def fresh(root: Path, record: dict, now: str) -> bool:
    """The code this record measured is the checkout's (see the module docstring)."""
    commit = Commit(root, record.get("commit"))
    script = (record.get("command") or "").split()[1:2]
    if commit.commit and script and commit.tree_hash() == record.get("code_hash"):
        return commit.unchanged(measured_files(commit, script[0]))
    return record.get("code_hash") == now


def stale_blocks(doc: Path, root: Path, now: str) -> list[str]:
    """The doc's generated blocks that carry no provenance or were measured on other code."""
    found = []
    for name, body in BLOCK.findall(doc.read_text(encoding="utf-8")):
        if not body.strip():
            continue  # a section no script has filled yet holds no figure
        mark = PROVENANCE.search(body)
        if mark is None:
            found.append(f"{doc.name} {name}: records no code hash (measured before hashes were kept); rerun its script")
            continue
        result = root / mark.group(1)
        record = json.loads(result.read_text(encoding="utf-8")) if result.is_file() else {}
        record = {**record, "commit": mark.group(2), "code_hash": mark.group(3)}
        if not fresh(root, record, now):
            found.append(f"{doc.name} {name}: measured at {mark.group(2)} on other code ({mark.group(1)}); "
                         "rerun its script")
    return found


def stale_results(root: Path, docs: list[Path], now: str) -> list[str]:
    """The results files the docs cite whose JSON record carries no code hash or was measured on other code."""
    cited = sorted({stem for doc in docs for stem in CITED.findall(doc.read_text(encoding="utf-8"))})
    found = []
    for stem in cited:
        path = root / "benchmarks" / "results" / f"{stem}.json"
        if not path.exists():
            continue  # a figure without a JSON record (a profile's text) is dated by the block citing it
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("code_hash") is None or not fresh(root, record, now):
            why = "records no code hash" if record.get("code_hash") is None else "measured on other code"
            found.append(f"benchmarks/results/{stem}.json (cited in the docs): {why}; rerun its script")
    return found


def stale(root: Path = REPO) -> list[str]:
    now = code_hash(root)
    docs = [root / name for name in DOCS if (root / name).exists()]
    return [line for doc in docs for line in stale_blocks(doc, root, now)] + stale_results(root, docs, now)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=REPO, help="the checkout to check (default: this one)")
    found = stale(parser.parse_args().root)
    for line in found:
        print(line)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
