"""The demo pipeline: SynthPedes end to end from the shipped start, with an HTML report.

Generate SynthPedes (CUHK-PEDES shape; by default drawn and worded in the shifted style, unlike the
start's pretraining corpus, so there is a domain gap to close), evaluate the start zero-shot, fine-tune it
with the ITC baseline, with CPCL and with the oracle (true ids: the upper bound, the one run
that reads person ids), and write OUT/report.html. With start "scratch" a small CLIP is first
pretrained from random weights on a generated web-style corpus. Data (and a pretrained start)
are reused by a second run with the same plan (OUT/demo.json), so only the fine-tuning is redone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cpcl.engine.train import run_config
from cpcl.experiments.common import finetune_overrides, generate_data, pretrain_start
from cpcl.experiments.demo_report import write_report
from cpcl.experiments.plans import DemoPlan

# (run name, label in the report, what its phase line says)
METHODS = (
    ("zero_shot", "zero-shot", "evaluating the start zero-shot"),
    ("itc", "ITC", "fine-tuning with ITC, the weak baseline"),
    ("cpcl", "CPCL", "fine-tuning with CPCL (no person id read)"),
    ("oracle", "oracle", "fine-tuning the oracle (true person ids: the upper bound)"),
)


class Phases:
    """Numbered progress lines with the time each phase took."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.start = total, 0, time.perf_counter()
        self.seconds: dict[str, float] = {}

    def run(self, name: str, message: str, work: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.done += 1
        print(f"[{self.done}/{self.total}] {message} ...", flush=True)
        start = time.perf_counter()
        result = work(*args, **kwargs)
        self.seconds[name] = time.perf_counter() - start
        print(f"[{self.done}/{self.total}] {name}: {self.seconds[name]:.0f} s", flush=True)
        return result


def prepare_start(plan: DemoPlan, out: Path, phases: Phases) -> str | Path:
    """Data (and, from scratch, the pretrained start), reused when the plan has not changed."""
    plan_file = out / "demo.json"
    previous = json.loads(plan_file.read_text()) if plan_file.is_file() else None
    reusable = plan.reusable_part()
    start = out / "pretrain" / "best.pt" if plan.scratch else plan.start
    if previous is not None and previous.get("reusable") == reusable and (not plan.scratch or start.is_file()):
        phases.done += 2 if plan.scratch else 1
        print(f"[1-{phases.done}/{phases.total}] reusing the data{' and the pretrained start' if plan.scratch else ''} "
              f"in {out} (same plan)", flush=True)
        return start
    plan_file.unlink(missing_ok=True)  # the data it described is about to be replaced
    pairs = plan.pretrain_pairs if plan.scratch else 0
    phases.run("data", f"generating SynthPedes ({'/'.join(map(str, plan.ids))} identities)"
               + (f" and {pairs} pretraining pairs" if pairs else "") + f" under {out / 'data'}",
               generate_data, out / "data", plan.ids, plan.seed, pairs, style=plan.style)
    if plan.scratch:
        phases.run("pretrain", f"pretraining a {plan.preset} CLIP from scratch ({plan.pretrain_epochs} epochs)",
                   pretrain_start, out / "data", out / "pretrain", plan.preset, plan.pretrain_epochs, plan.seed)
    # written once the data (and pretraining) are complete, so an interrupted one is never reused
    plan_file.write_text(json.dumps({"reusable": reusable}, indent=2))
    return start


def run_demo(plan: DemoPlan, out: Path) -> Path:
    """The whole demo into `out`; returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    phases = Phases((3 if plan.scratch else 2) + len(METHODS))
    start = prepare_start(plan, out, phases)
    runs: dict[str, tuple[Path, float | None]] = {}
    for method, label, what in METHODS:
        epochs = "" if method == "zero_shot" else f" ({plan.epochs} epochs)"
        elapsed = phases.run(method, what + epochs, run_config, "synthpedes", out / method,
                             [f"method={method}", *finetune_overrides(out / "data", start, plan.epochs, plan.seed)])
        runs[label] = (out / method, None if method == "zero_shot" else elapsed)
    phases.run("report", "writing the report", write_report, plan, out, runs, phases.seconds)
    print(f"\nreport: {out / 'report.html'}  (total {(time.perf_counter() - phases.start) / 60:.1f} min)")
    return out / "report.html"
