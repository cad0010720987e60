"""The quality benchmark's table (table.md) from its results.json: mean ± std over seeds per method, and the
paired differences (CPCL - ITC, oracle - ITC, each method - CPCL) per seed with their 95% t-intervals, on the
val-selected checkpoints' test R1, the last epoch's and val R1."""

from __future__ import annotations

import statistics

from scipy import stats

from cpcl.evaluation.report import METRICS


def _mean_spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def paired_difference(results: dict, a: str, b: str, metric: str = "R1") -> dict | None:
    """Per-seed a - b on the seeds both ran, their mean and 95% t-interval (None: no common seed)."""
    if a not in results["methods"] or b not in results["methods"]:
        return None
    seeds = sorted(set(results["methods"][a]) & set(results["methods"][b]), key=int)
    if not seeds:
        return None
    diffs = [results["methods"][a][s][metric] - results["methods"][b][s][metric] for s in seeds]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return {"seeds": seeds, "diffs": diffs, "mean": mean, "low": None, "high": None}
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
    return {"seeds": seeds, "diffs": diffs, "mean": mean, "low": mean - half, "high": mean + half}


def _interval(paired: dict) -> str:
    return "-" if paired["low"] is None else f"[{paired['low']:+.2f}, {paired['high']:+.2f}]"


def _paired_cell(results: dict, a: str, b: str, metric: str, seeds: list[str]) -> str:
    """"mean [95% t]" of a - b in `metric` on `seeds`, or "-" where a run lacks the metric."""
    if not all(metric in results["methods"][m][s] for m in (a, b) for s in seeds):
        return "-"
    paired = paired_difference(results, a, b, metric)
    return f"{paired['mean']:+.2f} {_interval(paired)}"


def paired_lines(results: dict) -> list[str]:
    """Markdown lines: CPCL - ITC and oracle - ITC on every seed both ran, then each other method run on two or
    more of CPCL's seeds - CPCL; per seed, and the mean and 95% t-interval of test R1 (val-selected
    checkpoints), of the last epoch's test R1, and of val R1."""
    methods = results["methods"]
    pairs = [(a, "itc", 1) for a in ("cpcl", "oracle") if a in methods and "itc" in methods]
    pairs += [(m, "cpcl", 2) for m in methods if m not in ("zero_shot", "itc", "cpcl") and "cpcl" in methods]
    rows = []
    for a, b, fewest in pairs:
        test = paired_difference(results, a, b)
        if test is None or len(test["seeds"]) < fewest:
            continue
        name = f"{'CPCL' if a == 'cpcl' else a} - {'ITC' if b == 'itc' else 'CPCL'}"
        rows.append(f"| {name} | {', '.join(test['seeds'])} | " + " / ".join(f"{d:+.2f}" for d in test["diffs"])
                    + f" | {test['mean']:+.2f} {_interval(test)} | "
                    + f"{_paired_cell(results, a, b, 'last_R1', test['seeds'])} | "
                    + f"{_paired_cell(results, a, b, 'val_R1', test['seeds'])} |")
    if not rows:
        return []
    return ["", "| paired difference | seeds | test R1 per seed | test R1 mean [95% t] | last epoch: test R1 mean "
            "[95% t] | val R1 mean [95% t] |", "|---|---|---|---|---|---|", *rows]


def quality_table(results: dict) -> str:
    """Markdown: mean ± std over seeds per method, the paired CPCL - ITC per seed with its
    interval, and the comparisons the paper's claims need."""
    retested = f", re-tested on {results['retest']} (`cpcl bench retest`)" if "retest" in results else ""
    lines = [f"Preset `{results['preset']}`{retested}, test split, val-selected checkpoints (mean ± std over seeds); "
             "R1 last: the last epoch's checkpoint; val R1: the selected checkpoint's R1 on val; image-label purity: "
             "of the last epoch's pseudo labels (oracle_image_purity, the mean over seeds).", "",
             "| method | seeds | " + " | ".join(METRICS) + " | R1 last | val R1 | image-label purity | training s |",
             "|---|---|" + "---|" * (len(METRICS) + 4)]
    means: dict[str, float] = {}
    for method, per_seed in results["methods"].items():
        rows = list(per_seed.values())
        means[method] = statistics.fmean(r["R1"] for r in rows)
        cells = [_mean_spread([r[m] for r in rows]) for m in METRICS]
        for key in ("last_R1", "val_R1"):
            values = [r[key] for r in rows if key in r]
            cells.append(_mean_spread(values) if values else "-")
        purity = [r["image_purity"] for r in rows if "image_purity" in r]
        cells.append(f"{statistics.fmean(purity):.2f}" if purity else "-")
        lines.append(f"| {method} | {len(rows)} | " + " | ".join(cells)
                     + f" | {statistics.fmean(r['seconds'] for r in rows):.0f} |")
    lines.extend(paired_lines(results))
    lines.append("")
    if {"cpcl", "oracle"} <= set(means) and means["oracle"] > 0:
        lines.append(f"- CPCL R1 / oracle R1: {means['cpcl'] / means['oracle']:.3f} (paper, CUHK-PEDES: 0.954)")
    if {"cpcl", "itc"} <= set(means):
        lines.append(f"- CPCL R1 - ITC R1: {means['cpcl'] - means['itc']:+.2f} points")
    if {"oracle", "itc"} <= set(means):
        lines.append(f"- oracle R1 - ITC R1 (room the benchmark leaves): {means['oracle'] - means['itc']:+.2f} points")
    return "\n".join(lines) + "\n"
