"""A self-contained HTML report of training runs: metrics table, training curves (inline SVG)
and retrieval examples (query sentence, top-k thumbnails, hits marked), for a person to look at.

Pure rendering apart from `retrieval_examples`, which runs a model over an evaluation split.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from cpcl.data.records import SplitData
from cpcl.data.transforms import load_rgb
from cpcl.evaluation.evaluate import person_ids
from cpcl.evaluation.features import extract_image_features, extract_text_features
from cpcl.model.inference import LoadedModel

METRICS = ("R1", "R5", "R10", "mAP", "mINP")
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
THUMB_HEIGHT = 128  # pixels of a retrieval thumbnail
HIT_COLOUR, MISS_COLOUR = (44, 160, 44), (214, 39, 40)  # frame of a thumbnail of the query's person / another one


class EpochCurves(Protocol):
    """What the training curves read of an epoch record (the engine's `EpochRecord`; this layer does not
    import the engine): each group holds its metrics.jsonl keys."""

    epoch: int  # from 0
    losses: dict[str, float]  # "loss" and the loss terms
    val: dict[str, float]  # "val_R1", ...
    labels: dict[str, float]  # "image_clusters", "image_outliers", ...
    oracle: dict[str, float]  # "oracle_image_purity", ...


@dataclass
class RunSummary:
    """What the report shows of one run."""

    name: str  # label in tables and legends, e.g. "CPCL"
    results: dict  # results.json of the run
    records: list[EpochCurves]  # metrics.jsonl of the run, one record per epoch
    seconds: float | None = None  # wall-clock training time, when known


@dataclass
class Example:
    """One text query and its top-k gallery images."""

    query: str
    hits: list[tuple[Path, float, bool]]  # (image path, cosine score, same person as the query)


@torch.no_grad()
def retrieval_examples(loaded: LoadedModel, split: SplitData, queries: list[int], k: int, batch_size: int,
                       workers: int = 0) -> list[Example]:
    """Top-k text-to-image results of the captions `queries` (indices into split.captions)."""
    query_ids, gallery_ids = person_ids(split, "report")
    paths = [image.path for image in split.images]
    gallery = extract_image_features(loaded, paths, batch_size, workers, progress="report gallery")
    tokens = loaded.tokenize([split.captions[q].text for q in queries])
    texts = extract_text_features(loaded, tokens, batch_size, desc="report queries")
    scores, order = (texts @ gallery.T).topk(min(k, len(paths)), dim=1)
    return [Example(split.captions[q].text,
                    [(paths[g], float(s), bool(gallery_ids[g] == query_ids[q])) for s, g in zip(row_s, row_g)])
            for q, row_s, row_g in zip(queries, scores.tolist(), order.tolist())]


def spaced_queries(captions: int, count: int) -> list[int]:
    """`count` caption indices spread evenly over `captions` (all of them when there are fewer)."""
    step = max(1, captions // max(1, count))
    return list(range(0, captions, step))[:count]


def example_strip(example: Example, border: int = 4) -> np.ndarray:
    """One example's ranked thumbnails side by side, each framed green (same person) or red: [H, W, 3] uint8."""
    frames = []
    for path, _, hit in example.hits:
        image = load_rgb(path)
        image = image.resize((max(1, round(image.width * THUMB_HEIGHT / image.height)), THUMB_HEIGHT))
        framed = Image.new("RGB", (image.width + 2 * border, image.height + 2 * border),
                           HIT_COLOUR if hit else MISS_COLOUR)
        framed.paste(image, (border, border))
        frames.append(np.asarray(framed))
    return np.concatenate(frames, axis=1)


def metrics_table(runs: list[RunSummary], which: str = "best") -> str:
    """HTML table of test metrics per run (the val-selected checkpoint by default)."""
    head = "".join(f"<th>{m}</th>" for m in METRICS)
    rows = []
    for run in runs:
        test = run.results.get("test", {}).get(which, {})
        cells = "".join(f"<td>{test[m]:.2f}</td>" if m in test else "<td>-</td>" for m in METRICS)
        seconds = f"{run.seconds / 60:.1f} min" if run.seconds is not None else "-"
        rows.append(f"<tr><th>{html.escape(run.name)}</th>{cells}<td>{run.results.get('epochs', 0)}</td>"
                    f"<td>{seconds}</td></tr>")
    return (f"<table><tr><th>method</th>{head}<th>epochs</th><th>training</th></tr>{''.join(rows)}</table>")


def line_chart(title: str, series: dict[str, list[tuple[float, float]]], xlabel: str = "epoch",
               width: int = 420, height: int = 240) -> str:
    """An inline SVG line chart: one polyline per named, non-empty series of (x, y) points."""
    series = {name: line for name, line in series.items() if line}
    points = [p for line in series.values() for p in line]
    if not points:
        return f"<p>{html.escape(title)}: no data</p>"
    left, right, top, bottom = 52, 12, 28, 36
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="chart">',
             f'<text x="{width / 2}" y="16" text-anchor="middle" font-weight="bold">{html.escape(title)}</text>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#444"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#444"/>',
             f'<text x="{width / 2}" y="{height - 4}" text-anchor="middle">{html.escape(xlabel)}</text>']
    for i in range(5):
        y = y0 + (y1 - y0) * i / 4
        parts.append(f'<text x="{left - 4}" y="{sy(y) + 4:.1f}" text-anchor="end" font-size="10">{y:.3g}</text>'
                     f'<line x1="{left}" y1="{sy(y):.1f}" x2="{width - right}" y2="{sy(y):.1f}" stroke="#eee"/>')
    for x in sorted({p[0] for p in points}):
        parts.append(f'<text x="{sx(x):.1f}" y="{height - bottom + 14}" text-anchor="middle" '
                     f'font-size="10">{x:g}</text>')
    for i, (name, line) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in line)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>')
        parts.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}"/>' for x, y in line)
        parts.append(f'<text x="{left + 8}" y="{top + 12 + 13 * i}" fill="{colour}" font-size="11">'
                     f'{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


QUALITY = (("nmi", "NMI"), ("ari", "ARI"), ("purity", "purity"), ("precision", "pair precision"),
           ("recall", "pair recall"))  # oracle_ diagnostics of pseudo labels (key suffix, legend)


def training_curves(runs: list[RunSummary]) -> str:
    """One training-loss chart per run (their scales differ: ITC's ~3 beside CPCL's prototype
    losses would flatten both), val R1 per epoch for all, and for the runs that cluster: clusters and
    outliers, and the quality of their image and caption labels against true ids (the `oracle_`
    diagnostics)."""

    def series(group: str, key: str, run: RunSummary) -> list[tuple[float, float]]:
        return [(r.epoch + 1, values[key]) for r in run.records if key in (values := getattr(r, group))]

    charts = [line_chart(f"{run.name}: training loss", {"loss": series("losses", "loss", run)})
              for run in runs if series("losses", "loss", run)]
    charts.append(line_chart("val R1 (%)", {run.name: series("val", "val_R1", run) for run in runs}))
    for run in runs:
        if run.results.get("method") == "oracle" or not any(
                f"{what}_clusters" in r.labels for r in run.records for what in ("image", "text", "pair")):
            continue
        counts = {f"{what} {count}": series("labels", f"{what}_{count}", run)
                  for what in ("image", "text", "pair") for count in ("clusters", "outliers")}
        charts.append(line_chart(f"{run.name}: clusters and outliers", counts))
        for modality, label in (("image", "image labels"), ("text", "caption labels")):
            quality = {name: series("oracle", f"oracle_{modality}_{key}", run) for key, name in QUALITY}
            if any(quality.values()):
                charts.append(line_chart(f"{run.name}: {label} vs true ids", quality))
    return "".join(charts)


def _thumbnail(path: Path) -> str:
    image = load_rgb(path)
    image = image.resize((max(1, round(image.width * THUMB_HEIGHT / image.height)), THUMB_HEIGHT))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def examples_html(examples: list[Example]) -> str:
    """Each query with its ranked thumbnails: green frame = same person, red = another one."""
    blocks = []
    for example in examples:
        cells = "".join(
            f'<figure class="{"hit" if hit else "miss"}"><img src="{_thumbnail(path)}" alt="{html.escape(path.name)}">'
            f'<figcaption>#{rank} {score:.3f}{" hit" if hit else ""}</figcaption></figure>'
            for rank, (path, score, hit) in enumerate(example.hits, start=1))
        blocks.append(f'<div class="example"><p class="query">&ldquo;{html.escape(example.query)}&rdquo;</p>'
                      f'<div class="row">{cells}</div></div>')
    return "".join(blocks)


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
.chart{margin:0 12px 12px 0;border:1px solid #ddd}.row{display:flex;gap:8px}
figure{margin:0;padding:3px;border:4px solid #bbb;text-align:center;font-size:11px}
figure.hit{border-color:#2ca02c}figure.miss{border-color:#d62728}.example{margin:14px 0}
.query{font-style:italic;margin:4px 0}.lead li{font-size:1.15em;margin:4px 0}"""


@dataclass(frozen=True)
class PageText:
    """The words of a report page around its tables, curves and examples."""

    title: str
    intro: str  # the paragraph under the headline
    headline: list[str]  # the lines that lead the page
    examples_from: str  # which checkpoint the retrieval examples come from
    notes: list[str]  # the closing "Run" list


def render_report(text: PageText, runs: list[RunSummary], examples: list[Example]) -> str:
    """The whole page as one HTML string (images embedded, no external files); `text.headline` lines
    lead it."""
    title, examples_from = text.title, text.examples_from
    notes_html = "".join(f"<li>{html.escape(note)}</li>" for note in text.notes)
    lead = "".join(f"<li>{html.escape(line)}</li>" for line in text.headline)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><ul class='lead'>{lead}</ul>"
            f"<p>{html.escape(text.intro)}</p><h2>Text-to-image retrieval on the test split (%)</h2>{metrics_table(runs)}"
            f"<p>Checkpoints selected on the val split; the numbers of the last epoch are in each run's "
            f"results.json.</p><h2>Training</h2><div>{training_curves(runs)}</div>"
            f"<h2>Retrieval examples ({html.escape(examples_from)})</h2>{examples_html(examples)}"
            f"<h2>Run</h2><ul>{notes_html}</ul></body></html>")
