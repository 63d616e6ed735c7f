"""Every import inside mixalign points down the pipeline: ground floor < data < model < llvec < mixture
< callbacks < cli. Fails on an upward arrow (moving `WeightSchedule` back into mixture/ does it)."""

from __future__ import annotations

import ast

from helpers import REPO

LAYERS = {"data": 1, "model": 2, "llvec": 3, "mixture": 4, "downstream": 4, "callbacks": 5, "cli": 6, "__main__": 7}
# the rest (errors, io, paths, progress, units, assets) is the ground floor, 0


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def imports() -> list[tuple[str, str]]:
    found = []
    for path in sorted((REPO / "mixalign").rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mixalign"):
                found.append((module, node.module))
            elif isinstance(node, ast.Import):
                found += [(module, a.name) for a in node.names if a.name.startswith("mixalign")]
    return found


def test_imports_were_found():
    assert len(imports()) > 100


def test_no_import_points_up_the_pipeline():
    upward = [f"{a} -> {b}" for a, b in imports() if layer(b) > layer(a)]
    assert upward == []


def test_the_layer_map_catches_an_upward_arrow():
    assert layer("mixalign.mixture.rounds") > layer("mixalign.data.datamodule")
    assert layer("mixalign.errors") == 0 and layer("mixalign.cli") > layer("mixalign.callbacks.kl")
