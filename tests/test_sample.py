"""`mixalign sample`: seeded text from any checkpoint; temperature and top_k change what is drawn from."""

import json

import numpy as np
import torch
from helpers import REPO, mixalign
from test_montecarlo import START, decoder
from test_token_kl import tiny_gpt

from mixalign.cli import main
from mixalign.llvec.montecarlo import sample_sequences

BASE = str(REPO / "checkpoints" / "base.ckpt")


def first_tokens(model, n, **kwargs) -> np.ndarray:
    draws = sample_sequences(decoder(model), [START], None, 6, n=n, max_new_tokens=1, seed=0, batch_size=500, **kwargs)
    return np.bincount([ids[0] for ids in draws.token_ids], minlength=6)


def test_temperature_and_top_k_reshape_the_sampling_distribution():
    from scipy.stats import chisquare

    model = tiny_gpt(4, block_size=8, vocab_size=6)
    with torch.no_grad():
        logits = model(torch.tensor([[START]]))[0, 0].double()
    counts = first_tokens(model, 3000, temperature=0.5)
    assert chisquare(counts, torch.softmax(logits / 0.5, -1).numpy() * 3000).pvalue > 1e-3
    top2 = set(logits.topk(2).indices.tolist())
    counts = first_tokens(model, 600, top_k=2)
    assert set(np.flatnonzero(counts).tolist()) == top2
    greedy = first_tokens(model, 50, top_k=1)
    assert greedy[int(logits.argmax())] == 50


def test_sample_command_is_seeded_continues_the_prompt_and_writes_json_lines(tmp_path, monkeypatch, capsys):
    """In process (the CLI's own `main`): four runs without four interpreter start-ups."""
    monkeypatch.chdir(tmp_path)
    args = ["sample", "--model", BASE, "--n", "2", "--max_new_tokens", "24", "--prompt", "The court held"]

    def sample(*extra: str) -> str:
        main([*args, *extra])
        return capsys.readouterr().out

    one = sample("--seed", "5", "--out", "s.jsonl")
    again = sample("--seed", "5")
    samples = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(samples) == 2 and all(s["text"].startswith("The court held") for s in samples)
    assert all(s["text"] in one for s in samples) and samples[0]["text"] != samples[1]["text"]
    assert again == one.replace("written: s.jsonl\n", "")
    greedy = [sample("--top_k", "1", "--seed", s) for s in ("5", "6")]
    assert greedy[0] != again  # top_k 200 drew other tokens than the greedy path
    assert greedy[0] == greedy[1]  # top_k 1 is greedy: the seed no longer matters


def test_a_prompt_longer_than_the_context_is_a_one_line_error(tmp_path):
    out = mixalign("sample", "--model", BASE, "--prompt", "word " * 400, cwd=tmp_path, check=False)
    assert out.returncode == 2 and "positions" in out.stderr and "Traceback" not in out.stderr
