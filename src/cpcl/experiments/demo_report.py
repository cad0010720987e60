"""The demo's report: the headline (CPCL - ITC, CPCL / oracle, how far one seed goes), the test
metrics, one loss chart per method, val R1, clusters, and CPCL's retrieval examples."""

from __future__ import annotations

from pathlib import Path

from cpcl.data.readers import load_dataset
from cpcl.data.tokenizer import default_tokenizer
from cpcl.engine.config import TrainConfig
from cpcl.evaluation.report import METRICS, RunSummary, read_run, render_report, retrieval_examples
from cpcl.experiments.plans import DemoPlan
from cpcl.model.inference import load_for_inference
from cpcl.utils.config import load_config

EXAMPLES, TOP_K = 8, 5  # retrieval examples shown, thumbnails per example


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
                     "within noise (README, Benchmarks, says what the benchmark shows over seeds)."))
    lines.append("This is one seed. From one seed to the next, each method's test R1 moves by about a point or "
                 "two on data this size, so a difference of that size is noise, not evidence. The benchmark "
                 "(`cpcl bench quality --preset shifted`, in README) trains every method over several seeds "
                 "and reports the paired CPCL - ITC difference with its 95% interval.")
    return lines


def write_report(plan: DemoPlan, out: Path, runs: dict[str, tuple[Path, float | None]],
                 seconds: dict[str, float]) -> None:
    """OUT/report.html from the runs the demo made, and the test R1 table on stdout."""
    summaries = {label: read_run(label, run_dir, elapsed) for label, (run_dir, elapsed) in runs.items()}
    cpcl_dir = runs["CPCL"][0]
    cfg = load_config(TrainConfig, cpcl_dir / "config.yaml")
    loaded = load_for_inference(cpcl_dir / "best.pt", cfg.device, cfg.precision)
    model = loaded.model
    test = load_dataset(cfg.data.dataset, Path(cfg.data.root)).splits["test"]
    tokens = default_tokenizer().tokenize([c.text for c in test.captions], model.config.text.context_length)
    step = max(1, len(test.captions) // EXAMPLES)
    examples = retrieval_examples(model, test, tokens, list(range(0, len(test.captions), step))[:EXAMPLES], TOP_K,
                                  loaded.preprocessing, cfg.eval.batch_size, cfg.data.workers, loaded.device,
                                  loaded.dtype)
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
    page = render_report("cpcl demo: CPCL on SynthPedes", intro, headline(summaries), list(summaries.values()),
                         examples, f"CPCL, val-selected checkpoint, top {TOP_K}", notes)
    (out / "report.html").write_text(page, encoding="utf-8")
    for summary in summaries.values():
        best = summary.results["test"]["best"]
        print(f"{summary.name:>10}  " + "  ".join(f"{m} {best[m]:5.2f}" for m in METRICS))
