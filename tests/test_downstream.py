"""Downstream tasks: the shipped demo tasks' provenance, the target comparison, and `mixalign eval`
against a direct computation with the project's own scoring."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO, mixalign, scalars, tiny

from mixalign.data.prepare import is_heldout
from mixalign.data.reader import read_documents
from mixalign.downstream import (
    compare_to_target,
    demo_task_files,
    task_specs,
    yaml_task,
)
from mixalign.errors import MixalignError
from mixalign.llvec.models import load_model
from mixalign.llvec.scoring import score_gpt
from mixalign.llvec.textset import load_textset, resolve_textset
from mixalign.model.checkpoint import gpt_from_checkpoint

TASKS = REPO / "mixalign" / "assets" / "tasks"


def items(task: str) -> list[dict]:
    return [json.loads(line) for line in (TASKS / f"{task}.jsonl").read_text(encoding="utf-8").splitlines()]


def test_demo_tasks_come_from_held_out_text_outside_the_text_set():
    """Each item's passage + true continuation is held-out text (split 1337, 0.1) that no text-set
    text contains and no training document contains."""
    held, train = {}, {}
    for doc in read_documents("demo"):
        (held if is_heldout(doc.text, 1337, 0.1) else train).setdefault(doc.domain, []).append(doc.text)
    textset = load_textset(resolve_textset("demo"))
    assert sorted(demo_task_files()) == ["demo_bible", "demo_dictionary", "demo_docs", "demo_math", "demo_quotes"]
    for task in demo_task_files():
        domain = task.removeprefix("demo_")
        rows = items(task)
        assert len(rows) >= 175 and all(len(r["choices"]) == 4 and 0 <= r["gold"] < 4 for r in rows)
        assert len({r["gold"] for r in rows}) == 4  # the true continuation is not always in one place
        used = [t for t, d in zip(textset.texts, textset.domains) if d == domain]
        for r in rows:
            true = r["passage"] + r["choices"][r["gold"]]
            assert any(true in doc for doc in held[domain])
            assert not any(true in doc for doc in train.get(domain, []) + used)


def test_the_build_script_rebuilds_the_shipped_tasks_byte_for_byte(tmp_path):
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_demo_tasks.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    for path in sorted([*TASKS.glob("demo_*"), TASKS / "README.md"]):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name


def test_task_yaml_data_files_resolve_from_its_directory_and_a_missing_file_is_named(tmp_path):
    (tmp_path / "t.yaml").write_text("task: t\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: t.jsonl\n")
    assert yaml_task(tmp_path / "t.yaml")["dataset_kwargs"]["data_files"] == {"test": str(tmp_path / "t.jsonl")}
    (tmp_path / "f.yaml").write_text("task: f\nprocess_docs: !function utils.process\n")
    assert yaml_task(tmp_path / "f.yaml") == str(tmp_path / "f.yaml")  # lm-eval's loader reads tagged YAML
    assert len(task_specs(["demo"])) == 5 and task_specs(["arc_easy"]) == ["arc_easy"]
    with pytest.raises(MixalignError, match="task file 'nope.yaml' does not exist"):
        task_specs(["nope.yaml"])


def test_comparison_gives_gap_paired_error_and_agreement():
    gold = [0, 1, 2, 3, 0, 1]
    results = {"t": {"x": {"chosen": [0, 1, 2, 0, 1, 1], "gold": gold}},  # 4 of 6 right
               "m": {"x": {"chosen": [0, 2, 2, 3, 1, 0], "gold": gold}}}  # 3 of 6 right
    row = compare_to_target(results, "t")["models"]["m"]["tasks"]["x"]
    diff = np.array([1, 0, 1, 1, 0, 0]) - np.array([1, 1, 1, 0, 0, 1])
    assert row["acc"] == pytest.approx(0.5) and row["gap"] == pytest.approx(1 / 6)
    assert row["gap_stderr"] == pytest.approx(diff.std(ddof=1) / np.sqrt(6))
    assert row["agreement"] == pytest.approx(3 / 6)
    results["m"]["x"]["gold"] = gold[::-1]
    with pytest.raises(MixalignError, match="different items"):
        compare_to_target(results, "t")


def direct_choices(ckpt, rows) -> np.ndarray:
    """log p(choice | passage) with mixalign's own scoring, split into tokens as lm-eval splits them."""
    model, _ = gpt_from_checkpoint(ckpt)
    tokenizer = load_model(ckpt)
    chosen = []
    for r in rows:
        context = tokenizer.encode_batch([r["passage"]])[0]
        wholes = tokenizer.encode_batch([r["passage"] + c for c in r["choices"]])
        prefixes = [w[: len(context)] for w in wholes]
        logp = score_gpt(model.eval(), wholes).values - score_gpt(model, prefixes).values
        chosen.append(int(np.argmax(logp)))
    return np.array(chosen)


@pytest.mark.slow
def test_eval_gives_the_accuracy_and_agreement_a_direct_computation_gives(tmp_path):
    pytest.importorskip("lm_eval")
    base, target = REPO / "checkpoints" / "base.ckpt", REPO / "checkpoints" / "target.ckpt"
    mixalign("eval", "--target", str(target), "--models", str(base), "--tasks", "demo_math", "--limit", "40",
             "--batch_size", "8", "--out", "out", cwd=tmp_path)
    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    rows = items("demo_math")[:40]
    gold = np.array([r["gold"] for r in rows])
    mine, theirs = direct_choices(base, rows), direct_choices(target, rows)
    got = report["models"]["base"]["tasks"]["demo_math"]
    assert got["n"] == 40 and got["acc"] == pytest.approx((mine == gold).mean())
    assert report["models"]["target"]["tasks"]["demo_math"]["acc"] == pytest.approx((theirs == gold).mean())
    assert got["agreement"] == pytest.approx((mine == theirs).mean()) and got["agreement"] < 1
    assert (tmp_path / "out" / "eval.png").stat().st_size > 1000


@pytest.mark.slow
def test_downstream_callback_logs_the_accuracy_and_gap_of_the_saved_checkpoint(tmp_path, demo_cache):
    """At the last validation the callback's accuracy and gap are those a direct computation gives
    for last.ckpt and the target."""
    pytest.importorskip("lm_eval")
    target = REPO / "checkpoints" / "target.ckpt"
    mixalign("fit", *tiny("--trainer.max_steps", "20", "--trainer.default_root_dir", "run",
                          "--trainer.callbacks+=mixalign.callbacks.DownstreamEval", "--trainer.callbacks.target",
                          str(target), "--trainer.callbacks.tasks", "[demo_bible]", "--trainer.callbacks.limit", "16",
                          cache=demo_cache), cwd=tmp_path)
    run = tmp_path / "run" / "lightning_logs" / "version_0"
    logged = scalars(run)
    assert [step for step, _ in logged["downstream/demo_bible/acc"]] == [10, 20]
    rows = items("demo_bible")[:16]
    gold = np.array([r["gold"] for r in rows])
    mine, theirs = direct_choices(run / "checkpoints" / "last.ckpt", rows), direct_choices(target, rows)
    assert logged["downstream/demo_bible/acc"][-1][1] == pytest.approx((mine == gold).mean())
    gap = abs((mine == gold).mean() - (theirs == gold).mean())
    assert logged["downstream/demo_bible/gap"][-1][1] == pytest.approx(gap)
    assert logged["downstream/mean_gap"][-1][1] == pytest.approx(gap)
    assert logged["downstream/demo_bible/agreement"][-1][1] == pytest.approx((mine == theirs).mean())
