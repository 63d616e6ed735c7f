"""`mixalign score`: one model's log-likelihood vector on a text set."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from mixalign.cli.parsing import _parser, _textset, default_device, output_path
from mixalign.llvec.estimators import to_bits_per_byte
from mixalign.llvec.models import load_model
from mixalign.llvec.vectors import save_vector, vector_from_scores


def score_main(args: list[str]) -> None:
    """One model's log-likelihood vector on a text set, written atomically as .npz."""
    parser = _parser("score", score_main)
    parser.add_argument("--model", required=True, help="mixalign checkpoint (.ckpt) or local Hugging Face model dir")
    parser.add_argument("--textset", default="demo", help="'demo' (shipped) or a text-set file")
    parser.add_argument("--n_texts", type=Optional[int], default=None, help="score an evenly spaced subset")
    parser.add_argument("--out", required=True, help="output .npz")
    parser.add_argument("--device", default=default_device(), help="default: cuda where there is a GPU")
    parser.add_argument("--max_batch_tokens", type=Optional[int], default=None, help="default: by device")
    cfg = parser.parse_args(args)
    output_path(cfg.out)
    textset = _textset(cfg.textset, cfg.n_texts)
    model = load_model(cfg.model, device=cfg.device)
    result = model.score(textset, max_batch_tokens=cfg.max_batch_tokens, progress=f"scoring {Path(cfg.model).name}")
    vector = vector_from_scores(result, textset, model.description)
    save_vector(vector, cfg.out)
    nats = float(vector.values.mean())
    print(
        f"{cfg.out}: {len(vector.values)} texts, mean log-likelihood {nats:.2f} nats/text "
        f"({to_bits_per_byte(-nats, vector.mean_bytes):.4f} bits/byte), text set {vector.textset_hash[:12]}"
        + (f"; {result.n_windowed} texts longer than the context were scored in sliding windows" if result.n_windowed else "")
    )
