"""The layering of docs/architecture.md: each module imports (at top level or inside a function) only the
cpcl layers its own layer may import."""

from __future__ import annotations

import ast
from pathlib import Path

import cpcl

PACKAGE = Path(cpcl.__file__).parent
BASE = {"utils"}
ALLOWED = {  # layer -> the cpcl layers it may import (besides itself)
    "utils": set(),
    "data": BASE, "model": BASE, "synth": BASE, "clustering": BASE, "configs": BASE,
    "memory": set(), "losses": set(),
    "evaluation": BASE | {"data", "model", "clustering"},
    "engine": BASE | {"data", "model", "clustering", "memory", "losses", "configs", "evaluation"},
    "index": BASE | {"data", "model", "clustering", "evaluation"},
    "export": BASE | {"data", "model", "index"},
    "experiments": BASE | {"data", "model", "synth", "configs", "engine", "evaluation"},
    "web": BASE | {"index"},
    "api": BASE | {"data", "model", "clustering", "configs", "engine", "evaluation", "index"},
}


def layer_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported_layers(path: Path) -> set[str]:
    layers = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else \
            [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        layers |= {name.split(".")[1] for name in names if name.startswith("cpcl.")}
    return layers


def test_every_module_imports_only_the_layers_below_it():
    modules = sorted(PACKAGE.rglob("*.py"))
    unknown = {layer_of(path) for path in modules} - set(ALLOWED) - {"cli", "__init__", "__main__"}
    assert not unknown, f"layers missing from docs/architecture.md and this test: {unknown}"
    wrong = {f"{path.relative_to(PACKAGE)} imports cpcl.{layer}"
             for path in modules if (own := layer_of(path)) in ALLOWED
             for layer in imported_layers(path) - ALLOWED[own] - {own}}
    assert not wrong, sorted(wrong)


def test_the_check_sees_function_local_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from cpcl.engine.train import run_training\n    import cpcl.index.store\n")
    assert imported_layers(module) == {"engine", "index"}
