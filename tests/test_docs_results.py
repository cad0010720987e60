"""README shows the committed benchmark results as the benchmark wrote them, and its headline numbers are
read from them: the tables are copies of docs/results/*/table.md, and every decimal in README's Results
prose is a statistic of docs/results/bench_observed/results.json (a number lives in one place)."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
TABLES = sorted((ROOT / "docs" / "results").glob("*/table.md"))
HEADLINE = ROOT / "docs" / "results" / "bench_observed"
PAIRS = (("cpcl", "itc"), ("oracle", "itc"), ("oracle", "cpcl"))
PAIRED_METRICS = ("R1", "last_R1", "val_R1")


def readme_section(title: str) -> str:
    """README's `## title` section, up to the next `## ` heading."""
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, flags=re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def paired(methods: dict, a: str, b: str, metric: str) -> tuple[float, float, float]:
    """Mean of a - b over the seeds both ran and its 95% t-interval, as the benchmark's table states it."""
    seeds = sorted(set(methods[a]) & set(methods[b]), key=int)
    diffs = [methods[a][s][metric] - methods[b][s][metric] for s in seeds]
    mean = statistics.fmean(diffs)
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
    return mean, mean - half, mean + half


def headline_values(results: dict) -> set[str]:
    """Every figure README may quote from a results.json, formatted as table.md formats it."""
    methods = results["methods"]
    values = {f"{statistics.fmean(run[metric] for run in per_seed.values()):.2f}"
              for per_seed in methods.values() for metric in next(iter(per_seed.values()))}
    for a, b in PAIRS:
        for metric in PAIRED_METRICS:
            values |= {f"{value:+.2f}" for value in paired(methods, a, b, metric)}
    cpcl_r1, oracle_r1 = (statistics.fmean(r["R1"] for r in methods[m].values()) for m in ("cpcl", "oracle"))
    return values | {f"{cpcl_r1 / oracle_r1:.3f}"}


def test_there_are_committed_results():
    assert TABLES, "docs/results/*/table.md: no committed benchmark table"


@pytest.mark.parametrize("table", TABLES, ids=lambda path: path.parent.name)
def test_readme_shows_the_committed_table_unchanged(table):
    readme = (ROOT / "README.md").read_text()
    blocks = [block.strip() for block in table.read_text().split("\n\n") if block.strip()]
    assert any(block.startswith("|") for block in blocks), f"{table.relative_to(ROOT)} holds no table"
    for block in blocks:
        assert block in readme, f"README's copy of {table.relative_to(ROOT)} differs from the file: {block[:60]}"
    assert (table.parent / "results.json").is_file()


def test_readme_headline_numbers_are_the_committed_results():
    results = json.loads((HEADLINE / "results.json").read_text())
    section = readme_section("Results")
    table = (HEADLINE / "table.md").read_text()
    prose = section
    for block in table.split("\n\n"):
        prose = prose.replace(block.strip(), "")
    quoted = re.findall(r"[+-]?\d+\.\d+", prose)
    assert len(quoted) >= 5, "README's Results prose quotes no headline numbers"
    allowed = headline_values(results)
    stray = [number for number in quoted if number not in allowed]
    assert not stray, f"README's Results quotes numbers that {HEADLINE.relative_to(ROOT)}/results.json does not give: {stray}"


def test_readme_headline_sizes_are_the_benchmarks():
    results = json.loads((HEADLINE / "results.json").read_text())
    train, val, test = json.loads((HEADLINE / "bench.json").read_text())["ids"]
    section = readme_section("Results")
    assert f"{train:,} train / {val:,} val / {test:,} test people" in section
    seeds = {len(per_seed) for per_seed in results["methods"].values()}
    assert seeds == {int(n) for n in re.findall(r"(\d+) seeds", section)}, "README's seed count is not results.json's"
    assert f"--preset {results['preset']} --seeds {seeds.pop()}" in section
