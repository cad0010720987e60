"""`cpcl demo`: the main job on the embedded default, SynthPedes end to end.

Generate SynthPedes and its web-style pretraining corpus, pretrain a small CLIP from scratch
(the stand-in for CLIP's web pretraining), fine-tune it with CPCL and with the ITC baseline,
evaluate all three, and write OUT/report.html. Data and the pretrained model are reused by a
second run with the same plan (OUT/demo.json), so only the fine-tuning is redone.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path



@dataclass(frozen=True)
class DemoPlan:
    """Sizes of the demo, chosen to finish in about 12 minutes on 2 CPU cores."""

    seed: int = 0  # data and training seed
    ids: tuple[int, int, int] = (300, 50, 100)  # identities per split (train, val, test)
    pretrain_pairs: int = 12000  # image-caption pairs of the pretraining corpus
    pretrain_epochs: int = 2  # pretraining epochs
    preset: str = "small"  # CLIP preset pretrained from scratch
    epochs: int = 4  # fine-tuning epochs of ITC and CPCL

    def pretraining_part(self) -> dict:
        """What the generated data and the pretrained model depend on."""
        plan = asdict(self)
        plan.pop("epochs")
        return plan


DEFAULT_PLAN = DemoPlan()


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="SynthPedes end to end: generate, pretrain, train CPCL and ITC, evaluate, report",
        description="The main job: writes OUT/report.html (metrics, training curves, retrieval examples).")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default: runs/demo)")
    parser.add_argument("--seed", type=int, default=DEFAULT_PLAN.seed, help="data and training seed")
    parser.add_argument("--ids", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"), default=list(DEFAULT_PLAN.ids),
                        help="identities per split of the benchmark")
    parser.add_argument("--pretrain-pairs", metavar="N", type=int, default=DEFAULT_PLAN.pretrain_pairs,
                        help="image-caption pairs of the pretraining corpus")
    parser.add_argument("--pretrain-epochs", metavar="N", type=int, default=DEFAULT_PLAN.pretrain_epochs,
                        help="pretraining epochs")
    parser.add_argument("--preset", default=DEFAULT_PLAN.preset, help="CLIP preset pretrained from scratch")
    parser.add_argument("--epochs", metavar="N", type=int, default=DEFAULT_PLAN.epochs,
                        help="fine-tuning epochs of ITC and CPCL")
    parser.set_defaults(func=run_demo)


class Phases:
    """Numbered progress lines with the time each phase took."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.start = total, 0, time.perf_counter()
        self.seconds: dict[str, float] = {}

    def run(self, name: str, message: str, work, *args, **kwargs):
        self.done += 1
        print(f"[{self.done}/{self.total}] {message} ...", flush=True)
        start = time.perf_counter()
        result = work(*args, **kwargs)
        self.seconds[name] = time.perf_counter() - start
        print(f"[{self.done}/{self.total}] {name}: {self.seconds[name]:.0f} s", flush=True)
        return result


def run_demo(args: argparse.Namespace) -> int:
    from cpcl.engine.bench import finetune_overrides, generate_data, pretrain_overrides
    from cpcl.engine.train import run_config

    plan = DemoPlan(seed=args.seed, ids=tuple(args.ids), pretrain_pairs=args.pretrain_pairs,
                    pretrain_epochs=args.pretrain_epochs, preset=args.preset, epochs=args.epochs)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    plan_file = out / "demo.json"
    previous = json.loads(plan_file.read_text()) if plan_file.is_file() else None
    pretraining = json.loads(json.dumps(plan.pretraining_part()))  # as read back: tuples become lists
    reuse = previous is not None and previous.get("pretraining") == pretraining \
        and (out / "pretrain" / "best.pt").is_file()
    phases = Phases(6)
    if reuse:
        phases.done = 2
        print(f"[1-2/6] reusing the data and the pretrained model in {out} (same plan)", flush=True)
    else:
        plan_file.unlink(missing_ok=True)  # the data and the model it described are about to be replaced
        phases.run("data", f"generating SynthPedes ({'/'.join(map(str, plan.ids))} identities) and "
                   f"{plan.pretrain_pairs} pretraining pairs under {out / 'data'}",
                   generate_data, out / "data", plan.ids, plan.pretrain_pairs, plan.seed)
        phases.run("pretrain", f"pretraining a {plan.preset} CLIP from scratch ({plan.pretrain_epochs} epochs)",
                   run_config, "pretrain_synthpedes", out / "pretrain",
                   pretrain_overrides(out / "data", plan.preset, plan.pretrain_epochs, plan.seed))
    # written once the pretraining is complete, so an interrupted one is never reused
    plan_file.write_text(json.dumps({"pretraining": pretraining, "epochs": plan.epochs}, indent=2))
    start = out / "pretrain" / "best.pt"
    runs = {}
    for method, label in (("zero_shot", "zero-shot"), ("itc", "ITC"), ("cpcl", "CPCL")):
        what = "evaluating the pretrained start" if method == "zero_shot" else \
            f"fine-tuning with {label} ({plan.epochs} epochs)"
        elapsed = phases.run(method, what, run_config, "synthpedes", out / method,
                             [f"method={method}", *finetune_overrides(out / "data", start, plan.epochs, plan.seed)])
        runs[label] = (out / method, elapsed)
    phases.run("report", "writing the report", write_report, plan, out, runs, phases.seconds)
    total = time.perf_counter() - phases.start
    print(f"\nreport: {out / 'report.html'}  (total {total / 60:.1f} min)")
    return 0


def write_report(plan: DemoPlan, out: Path, runs: dict[str, tuple[Path, float]], seconds: dict[str, float]) -> None:
    from cpcl.data.readers import load_dataset
    from cpcl.data.tokenizer import default_tokenizer
    from cpcl.engine.config import TrainConfig
    from cpcl.evaluation.report import METRICS, read_run, render_report, retrieval_examples
    from cpcl.model.checkpoints import load_clip
    from cpcl.utils.config import load_config
    from cpcl.utils.runtime import resolve_device, resolve_precision

    summaries = [read_run(label, run_dir, elapsed if label != "zero-shot" else None)
                 for label, (run_dir, elapsed) in runs.items()]
    cpcl_dir = runs["CPCL"][0]
    cfg = load_config(TrainConfig, cpcl_dir / "config.yaml")
    device = resolve_device(cfg.device)
    model, _ = load_clip(cpcl_dir / "best.pt", device=device)
    test = load_dataset(cfg.data.dataset, Path(cfg.data.root)).splits["test"]
    tokens = default_tokenizer().tokenize([c.text for c in test.captions], model.config.text.context_length)
    step = max(1, len(test.captions) // 8)
    examples = retrieval_examples(model, test, tokens, list(range(0, len(test.captions), step))[:8], 5,
                                  cfg.augment, cfg.eval.batch_size, cfg.data.workers, device,
                                  resolve_precision(cfg.precision, device))
    train, val, test_ids = plan.ids
    intro = (f"SynthPedes ({train} / {val} / {test_ids} identities, seed {plan.seed}); a {plan.preset} CLIP "
             f"pretrained from scratch on {plan.pretrain_pairs} web-style pairs for {plan.pretrain_epochs} epochs "
             f"(zero-shot), then fine-tuned for {plan.epochs} epochs with the ITC baseline and with CPCL, "
             f"which never read a person id.")
    notes = [f"{name}: {value:.0f} s" for name, value in seconds.items()]
    notes.append(f"run folders: {', '.join(str(path) for path, _ in runs.values())}")
    page = render_report("cpcl demo: CPCL on SynthPedes", intro, summaries, examples,
                         "CPCL, val-selected checkpoint, top 5", notes)
    (out / "report.html").write_text(page, encoding="utf-8")
    for summary in summaries:
        best = summary.results["test"]["best"]
        print(f"{summary.name:>10}  " + "  ".join(f"{m} {best[m]:5.2f}" for m in METRICS))
