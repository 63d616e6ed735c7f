"""README's "Your own data" commands, run as written on a small Pile-format directory the test writes.

Only sizes (text-set size, probe and training steps) and locations (a temporary directory instead
of runs/) are changed; every command and option the README gives runs.
"""

from __future__ import annotations

import re

import pytest
import yaml
from helpers import REPO, mixalign, write_corpus

from mixalign.llvec.textset import load_textset

pytestmark = pytest.mark.slow

SMALLER = {  # appended to each command (the last value of an option wins): sizes for 600 documents
    "textset": ["--n", "30"],
    "weights": ["--mixture.n_texts", "null", "--mixture.probe_steps", "4", "--mixture.candidate_steps", "4"],
    "fit": ["--mixture.n_texts", "null", "--kl.n_texts", "null", "--trainer.max_steps", "6",
            "--trainer.val_check_interval", "6", "--trainer.enable_progress_bar", "false"],
}


def readme_commands() -> list[list[str]]:
    """The mixalign commands of the code block in README's "Your own data" section."""
    section = REPO.joinpath("README.md").read_text().split("## Your own data", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split() for line in block.splitlines() if line.startswith("mixalign ")]


def test_readme_own_data_section_runs_as_written(tmp_path):
    corpus = write_corpus(tmp_path / "pile" / "00.jsonl", documents_per_domain=200).parent
    commands = readme_commands()
    assert [c[1] for c in commands] == ["prepare", "textset", "weights", "fit"]
    outputs = {}
    for command in commands:
        args = [str(corpus) if a == "$DATA" else a.replace("runs/own", str(tmp_path / "own")) for a in command[1:]]
        args += SMALLER.get(command[1], []) + ["--mixture.cache_dir", str(tmp_path / "mixture_cache")] * (
            command[1] in ("weights", "fit"))
        outputs[command[1]] = mixalign(*args, cwd=REPO).stdout
    textset = load_textset(tmp_path / "own" / "textset.jsonl.zst")
    assert len(textset) == 30 and textset.domain_counts() == {"alpha": 10, "beta": 10, "gamma": 10}
    weights = yaml.safe_load((tmp_path / "own" / "weights.yaml").read_text())["weights"]
    assert sorted(weights) == ["alpha", "beta", "gamma"] and sum(weights.values()) == pytest.approx(1.0)
    (summary,) = re.findall(r"SUMMARY: (.*)", outputs["fit"])
    assert summary.startswith("step 0 -> 6; KL to target, exact on the text set")
    trained = dict(re.findall(r"(\w+) (\d\.\d{3})", summary.split("weights: ")[1]))
    assert {d: float(w) for d, w in trained.items()} == pytest.approx(weights, abs=5e-4)  # fit used the file


def test_prepare_with_the_gpt2_tokenizer_ignores_the_configs_model(tmp_path):
    """`prepare` only tokenizes: pile.yaml's base (vocabulary 4096) must not stop GPT-2 tokenization."""
    corpus = write_corpus(tmp_path / "pile" / "00.jsonl", documents_per_domain=100).parent
    out = mixalign("prepare", "--config", str(REPO / "configs" / "pile.yaml"), "--data.source", str(corpus),
                   "--data.tokenizer", "gpt2", "--data.cache_dir", str(tmp_path / "cache"), cwd=tmp_path).stdout
    assert re.search(r"^tokenizer: gpt2, token dtype: uint16$", out, re.M)
    assert {line.split()[0] for line in out.splitlines()[2:-1]} == {"alpha", "beta", "gamma"}
