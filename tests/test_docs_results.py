"""README shows the committed benchmark tables as the benchmark wrote them, not retyped."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TABLES = sorted((ROOT / "docs" / "results").glob("*/table.md"))


def test_there_are_committed_results():
    assert TABLES, "docs/results/*/table.md: no committed benchmark table"


@pytest.mark.parametrize("table", TABLES, ids=lambda path: path.parent.name)
def test_readme_shows_the_committed_table_unchanged(table):
    readme = (ROOT / "README.md").read_text()
    blocks = [block for block in table.read_text().split("\n\n") if block.startswith("|")]
    assert blocks, f"{table.relative_to(ROOT)} holds no table"
    for block in blocks:
        assert block.strip() in readme, f"README's copy of {table.relative_to(ROOT)} differs from the file"
    assert (table.parent / "results.json").is_file()
