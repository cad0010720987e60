"""Weak supervision, the project's hard rule, checked on the source: no training code path reads a person id,
except the oracle baseline and the `oracle_` diagnostics, which are named so, and the val selection, which
reads the val split's ids (as checkpoint selection does), never the training split's."""

from __future__ import annotations

import ast
from pathlib import Path

import cpcl

PACKAGE = Path(cpcl.__file__).parent
TRAINING = ("engine", "clustering", "losses.py", "memory.py")  # what a training run executes to learn
EVAL_SPLITS = ("val", "test")  # the splits whose ids `person_ids(split, NAME)` may read in training code


def id_reads(source: str) -> list[tuple[str, int, str]]:
    """(enclosing function, line, what) of each person-id read in `source` outside an `oracle_` function: an
    attribute `.person_id`, or a `person_ids(...)` call whose split name is not a literal val / test."""
    found: list[tuple[str, int, str]] = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        if not function.startswith("oracle_"):
            if isinstance(node, ast.Attribute) and node.attr == "person_id":
                found.append((function, node.lineno, ".person_id"))
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "person_ids":
                name = node.args[1] if len(node.args) > 1 else None
                if not (isinstance(name, ast.Constant) and name.value in EVAL_SPLITS):
                    found.append((function, node.lineno, "person_ids() of a split not named val / test"))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(source), "<module>")
    return found


def test_no_training_code_reads_a_person_id_outside_the_oracle():
    files = [path for part in TRAINING for path in sorted((PACKAGE / part).rglob("*.py"))
             if (PACKAGE / part).is_dir()] + [PACKAGE / part for part in TRAINING if part.endswith(".py")]
    assert len(files) > 20 and PACKAGE / "engine" / "pseudo_labels" / "cpcl.py" in files
    reads = [f"{path.relative_to(PACKAGE)}:{line} in {function}: {what}"
             for path in files for function, line, what in id_reads(path.read_text())]
    assert not reads, f"training code reads person ids (only oracle_ functions may): {reads}"


def test_the_check_finds_a_read_and_spares_the_oracle():
    source = (
        "def cpcl_labels(split):\n"
        "    return [image.person_id for image in split.images]\n"
        "def oracle_pair_person_ids(split):\n"
        "    return [image.person_id for image in split.images]\n"
        "def select(split):\n"
        "    a = person_ids(split, 'val')\n"
        "    b = person_ids(split, 'train')\n"
        "    return evaluate.person_ids(split, name)\n")
    assert [(function, line) for function, line, _ in id_reads(source)] == [
        ("cpcl_labels", 2), ("select", 7), ("select", 8)]
