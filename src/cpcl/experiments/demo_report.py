"""The demo's report: the headline (CPCL - ITC, CPCL / oracle, how far one seed goes), the test
metrics, one loss chart per method, val R1, clusters, and CPCL's retrieval examples; and the same page for any one
run of `cpcl train` (`cpcl report RUN_DIR`)."""

from __future__ import annotations

from pathlib import Path

from cpcl.data.readers import load_dataset
from cpcl.data.readers import load_json
from cpcl.engine.config import load_run_config
from cpcl.engine.rundir import METRICS as METRICS_FILE
from cpcl.engine.rundir import read_epoch_records
from cpcl.evaluation.report import (METRICS, Example, PageText, RunSummary, render_report, retrieval_examples,
                                    spaced_queries)
from cpcl.experiments.plans import DemoPlan
from cpcl.model.inference import load_for_inference
from cpcl.utils.errors import RunDirError

EXAMPLES, TOP_K = 8, 5  # retrieval examples shown, thumbnails per example


def read_run(name: str, run_dir: Path, seconds: float | None = None) -> RunSummary:
    """Summary of a run directory written by `cpcl train`: results.json and its epoch records."""
    records = run_dir / METRICS_FILE
    return RunSummary(name, load_json(run_dir / "results.json"),
                      read_epoch_records(records) if records.is_file() else [], seconds)


def headline(summaries: dict[str, RunSummary]) -> list[str]:
    """The comparisons the demo exists to show, and what one seed can and cannot tell."""
    r1 = {name: run.results["test"]["best"]["R1"] for name, run in summaries.items() if "test" in run.results}
    lines = []
    if {"CPCL", "ITC"} <= set(r1):
        lines.append(f"CPCL - ITC: {r1['CPCL'] - r1['ITC']:+.2f} R1 points on the test split "
                     f"(CPCL {r1['CPCL']:.2f}, ITC {r1['ITC']:.2f}; val-selected checkpoints).")
    if {"CPCL", "oracle"} <= set(r1) and r1["oracle"] > 0:
        lines.append(f"CPCL / oracle: {r1['CPCL'] / r1['oracle']:.3f} of the R1 that true person ids give "
                     f"(oracle {r1['oracle']:.2f}; the paper reaches 0.954 on CUHK-PEDES).")
    if {"oracle", "ITC"} <= set(r1):
        lines.append(f"oracle - ITC: {r1['oracle'] - r1['ITC']:+.2f}, the room identity-level training has here.")
    if {"zero-shot", "ITC", "CPCL", "oracle"} <= set(r1):
        best = max(("ITC", "CPCL", "oracle"), key=r1.get)
        gain = r1[best] - r1["zero-shot"]
        lines.append(f"Fine-tuning over the start: {gain:+.2f} R1 ({best}, the best of the three, against zero-shot "
                     f"{r1['zero-shot']:.2f})" + ("." if gain > 2 else
                     "; a start this strong leaves this data little to learn, so the comparisons above are "
                     "within noise (docs/experiments.md says what the benchmark shows over seeds)."))
    lines.append("This is one seed. From one seed to the next, each method's test R1 moves by about a point or "
                 "two on data this size, so a difference of that size is noise, not evidence. The benchmark "
                 "(`cpcl bench quality --preset shifted`, docs/training.md) trains every method over several seeds "
                 "and reports the paired CPCL - ITC difference with its 95% interval.")
    return lines


def run_examples(run_dir: Path, count: int = EXAMPLES, k: int = TOP_K) -> list[Example]:
    """`count` queries of the test split a run evaluated on (its config's data) with the top `k` of its best.pt."""
    cfg = load_run_config(run_dir / "config.yaml")
    loaded = load_for_inference(run_dir / "best.pt", cfg.device, cfg.precision)
    test = load_dataset(cfg.eval.dataset or cfg.data.dataset, Path(cfg.eval.root or cfg.data.root),
                        allow_outside_root=cfg.data.allow_outside_root).splits["test"]
    if not test.captions:
        return []
    return retrieval_examples(loaded, test, spaced_queries(len(test.captions), count), k, cfg.eval.batch_size,
                              cfg.data.workers)


def write_report(plan: DemoPlan, out: Path, runs: dict[str, tuple[Path, float | None]],
                 seconds: dict[str, float]) -> None:
    """OUT/report.html from the runs the demo made, and the test R1 table on stdout."""
    summaries = {label: read_run(label, run_dir, elapsed) for label, (run_dir, elapsed) in runs.items()}
    examples = run_examples(runs["CPCL"][0])
    train, val, test_ids = plan.ids
    start = (f"a {plan.preset} CLIP pretrained here from scratch on {plan.pretrain_pairs} web-style pairs for "
             f"{plan.pretrain_epochs} epochs" if plan.scratch else f"the shipped start {plan.start}")
    look = {"standard": "drawn and worded like the start's pretraining corpus",
            "shifted": "drawn and worded in the shifted style, unlike the start's pretraining corpus",
            "observed": "in the observed style: drawn and worded unlike the start's pretraining corpus, each "
                        "caption written from its image as its annotator saw it"}[plan.style]
    intro = (f"SynthPedes ({train} / {val} / {test_ids} identities, seed {plan.seed}, shaped like CUHK-PEDES, {look}); "
             f"{start} (zero-shot), fine-tuned for {plan.epochs} epochs with the ITC baseline, with CPCL "
             f"(neither reads a person id) and with the oracle (true person ids in place of pseudo labels: the "
             f"upper bound, and the one run that reads ids).")
    notes = [f"{name}: {value:.0f} s" for name, value in seconds.items()]
    notes.append(f"run folders: {', '.join(str(path) for path, _ in runs.values())}")
    text = PageText("cpcl demo: CPCL on SynthPedes", intro, headline(summaries),
                    f"CPCL, val-selected checkpoint, top {TOP_K}", notes)
    page = render_report(text, list(summaries.values()), examples)
    (out / "report.html").write_text(page, encoding="utf-8")
    for summary in summaries.values():
        best = summary.results["test"]["best"]
        print(f"{summary.name:>10}  " + "  ".join(f"{m} {best[m]:5.2f}" for m in METRICS))


def write_run_report(run_dir: Path, out: Path | None = None) -> Path:
    """The demo's report for one run of `cpcl train` (its metrics, curves, label quality where it has true ids,
    retrieval examples of its best.pt); written to `out` (default RUN_DIR/report.html), which is returned."""
    for name in ("config.yaml", "results.json", "best.pt"):
        if not (run_dir / name).is_file():
            raise RunDirError(f"{run_dir} has no {name}: give the folder of a finished cpcl train run")
    summary = read_run(run_dir.name, run_dir)
    cfg = load_run_config(run_dir / "config.yaml")
    best = summary.results.get("test", {}).get("best", {})
    lead = ["No test split: no test metrics."]
    if best:
        metrics = ", ".join(f"{m} {best[m]:.2f}" for m in METRICS if m in best)
        lead = [f"{cfg.method}: test {metrics} (checkpoint selected on {summary.results.get('selected_on', '?')}, "
                f"epoch {summary.results.get('best_epoch')} counted from 0)."]
    intro = (f"Method {cfg.method} on {cfg.data.dataset} data at {cfg.data.root}, {summary.results.get('epochs', 0)} "
             f"epochs from {cfg.model.init} at {cfg.model.image_size[0]}x{cfg.model.image_size[1]}.")
    text = PageText(f"cpcl run: {run_dir.name}", intro, lead, f"best.pt, top {TOP_K}", [f"run folder: {run_dir}"])
    page = render_report(text, [summary], run_examples(run_dir))
    out = out or run_dir / "report.html"
    out.write_text(page, encoding="utf-8")
    return out
