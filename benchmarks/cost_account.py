"""The method's cost against the main run's, for the shipped configs, before anything runs.

For each config: the probes its `mixture:` section plans (domain probes, candidates, tilts), their
training tokens and the tokens their scoring passes read, against the main run's training tokens
(`trainer.max_steps` x batch x block x gradient accumulation x devices x nodes), with the account of
`mixalign/mixture/cost.py`. The demo text set's token count is measured; for a text set that is
not here, docs/method.md's figures (section 5) (972.3 bytes a text, 0.293 GPT-2 tokens a byte) stand in. A
target that is a shipped mixalign checkpoint is loaded (memoized, as the probes use it: each repeated
read costs its output head); any other (a Hugging Face directory) is counted in full at every read.

    python benchmarks/cost_account.py --write
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REPO, read_config, replace_section, write_result  # noqa: E402
from mixalign.data.tokenizer import load_tokenizer  # noqa: E402
from mixalign.llvec.models import shared_model  # noqa: E402
from mixalign.llvec.textset import load_textset, resolve_textset, subset_textset  # noqa: E402
from mixalign.mixture.config import MixtureConfig  # noqa: E402
from mixalign.mixture.cost import planned_cost  # noqa: E402

CONFIGS = {"pile.yaml": dict(domains=8, devices=1), "scratch.yaml": dict(domains=8, devices=1),
           "pile-gpt2.yaml": dict(domains=22, devices=8)}  # the demo corpus's 8 domains; the Pile's 22 on one 8-GPU node
PILE_TOKENS_PER_TEXT = 972.3 * 0.293  # docs/method.md, section 5: mean text bytes x GPT-2 tokens per byte


def textset_tokens(mixture: MixtureConfig, tokenizer: str) -> int:
    if mixture.textset != "demo":
        return round(mixture.n_texts * PILE_TOKENS_PER_TEXT)
    textset = load_textset(resolve_textset("demo"))
    textset = subset_textset(textset, mixture.n_texts) if mixture.n_texts else textset
    return sum(len(e.ids) for e in load_tokenizer(tokenizer).encode_batch(textset.texts, add_special_tokens=False))


def account(name: str, domains: int, devices: int) -> dict:
    config = read_config(name)
    data, trainer = config["data"], config["trainer"]
    mixture = MixtureConfig(**{k: v for k, v in config["mixture"].items() if k != "target"})
    tokens_per_step = data["batch_size"] * data["block_size"]
    main = ((trainer["max_steps"] - mixture.warmup_steps) * tokens_per_step * trainer.get("accumulate_grad_batches", 1)
            * devices * trainer.get("num_nodes", 1))
    target = (REPO / "configs" / config["mixture"]["target"]).resolve()
    repeat = shared_model(str(target)).repeat_cost if target.suffix == ".ckpt" else 1.0
    cost = planned_cost(mixture.candidates, mixture.selection, domains, mixture.probe_steps,
                        mixture.candidate_steps or mixture.probe_steps, tokens_per_step,
                        textset_tokens(mixture, data["tokenizer"]), repeat, main, mixture.softmin_scales,
                        mixture.lag_temperatures, mixture.closing_temperatures)
    return {"config": name, "domains": domains, "devices": devices, **cost.to_dict(), "line": cost.line()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="fill BENCHMARKS.md's COST section")
    args = parser.parse_args()
    rows = [account(name, **sizes) for name, sizes in CONFIGS.items()]
    path = write_result("cost_account", {"rows": rows})
    lines = ["| config | domains x devices | probes | probe training tokens | forward-pass tokens | main run's training tokens "
             "| method / main run |", "|---|---|---|---|---|---|---|"]
    lines += [f"| `configs/{r['config']}` | {r['domains']} x {r['devices']} | {r['probes']} | {r['probe_train_tokens']:,} | "
              f"{r['probe_score_tokens']:,} | {r['main_train_tokens']:,} | {r['share_of_main_run']:.2%} |" for r in rows]
    text = "\n".join(lines) + ("\n\nTraining-token equivalents: a forward-pass token counts a third of a trained one. "
                               "Exact KL is assumed (the target shares the tokenizer): the target reads the text set "
                               "once in full and then beside every probe, through its output head alone where it is a "
                               "memoized mixalign checkpoint, in full otherwise.")
    print(text)
    if args.write:
        replace_section(REPO / "BENCHMARKS.md", "COST", text, path)


if __name__ == "__main__":
    main()
