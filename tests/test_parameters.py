"""No function in cpcl takes more than 6 parameters unless its docstring says why (STYLE.md, Code).

Counted: positional and keyword-only parameters, `self` / `cls` left out; `*args` / `**kwargs` are not counted
(they pass through, no caller lines them up). The reason is a sentence "Takes N parameters because ...", N the
count, so it cannot go stale when the signature changes.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import cpcl

PACKAGE = Path(cpcl.__file__).parent
MAX_PARAMETERS = 6


def parameter_count(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = node.args
    names = [arg.arg for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    return len(names[1:] if names[:1] in (["self"], ["cls"]) else names)


def says_why(node: ast.FunctionDef | ast.AsyncFunctionDef, count: int) -> bool:
    docstring = " ".join((ast.get_docstring(node) or "").split())
    return re.search(rf"\bTakes {count} parameters because \S", docstring) is not None


def long_signatures(path: Path) -> list[tuple[str, int, bool]]:
    """(name, parameter count, whether the docstring says why) of each function in `path` over the limit."""
    nodes = ast.walk(ast.parse(path.read_text(encoding="utf-8")))
    return [(node.name, count, says_why(node, count)) for node in nodes
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and (count := parameter_count(node)) > MAX_PARAMETERS]


def test_every_function_over_six_parameters_says_why():
    unexplained = sorted(f"{path.relative_to(PACKAGE).as_posix()}: {name} takes {count}"
                         for path in sorted(PACKAGE.rglob("*.py")) for name, count, why in long_signatures(path)
                         if not why)
    assert not unexplained, f"reduce them, or say 'Takes N parameters because ...' in the docstring: {unexplained}"


def test_the_check_counts_keyword_only_parameters_and_reads_the_reason(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "def short(self, a, b, c, d, e, f, *args, **kwargs): ...\n"
        "def long(a, b, c, d, e, /, f, *, g): ...\n"
        "def explained(a, b, c, d, e, f, g):\n"
        "    '''Adds. Takes 7\n    parameters because the caller has them all.'''\n"
        "def miscounted(a, b, c, d, e, f, g, h):\n"
        "    '''Takes 7 parameters because it once did.'''\n")
    assert long_signatures(module) == [("long", 7, False), ("explained", 7, True), ("miscounted", 8, False)]
