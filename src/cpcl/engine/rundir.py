"""The run directory's files written during training: config.yaml, last.pt (model, optimiser, fp16
loss scaler, progress, for --resume), best.pt with its model card best.md, metrics.jsonl (one record per
epoch) and results.json. Rank 0 alone writes them. The progress saved in last.pt is a `RunProgress`.

What a kill or a full disk leaves is repaired or refused in one line: a write that fails (a
read-only directory, no space left) is a `RunDirError` naming the file; checkpoints and
results.json are written through a temporary file and a rename, so they hold the old bytes or
the new ones; metrics.jsonl is appended to, so a kill can tear its last line, which --resume
drops with a warning; a last.pt without its training progress is refused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from cpcl.engine.record import EpochRecord
from cpcl.model.card import model_card
from cpcl.model.checkpoints import read_checkpoint, save_clip
from cpcl.model.clip import CLIP
from cpcl.utils import files
from cpcl.utils.errors import CheckpointError, RunDirError
from cpcl.utils.files import atomic_write, remove_stale_temporaries
from cpcl.utils.preprocessing import Preprocessing

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
CARD = "best.md"  # the model card beside best.pt
RUN_KEYS = ("optimizer", "scaler")  # last.pt's "run" entry: the optimiser and loss-scaler states beside the progress


@dataclass
class RunProgress:
    """How far a run got: saved in last.pt's "run" entry as plain types, restored by --resume."""

    epoch: int = 0  # epochs done
    step: int = 0  # optimizer steps done (TensorBoard's x axis); 0 when resuming a last.pt saved before it
    best_epoch: int | None = None  # the epoch (from 0) whose weights best.pt holds; None before the first
    best_r1: float = -1.0  # val R1 of best.pt; -1 before any val evaluation
    best_val: dict[str, float] | None = None  # val metrics of best.pt

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: Path) -> RunProgress:
        """The progress in a "run" entry (the optimiser and scaler states left aside); RunDirError naming the
        field for an unknown field or a wrong type."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(str(key) for key in data if key not in known and key not in RUN_KEYS)
        if unknown:
            raise RunDirError(f"cannot resume: {path} has unknown run field(s) {', '.join(unknown)}; it was not "
                              f"saved by this cpcl version's train")
        expected = {"epoch": (int,), "step": (int,), "best_epoch": (int, type(None)), "best_r1": (int, float),
                    "best_val": (dict, type(None))}
        for key, types in expected.items():
            if key in data and (not isinstance(data[key], types) or isinstance(data[key], bool)):
                raise RunDirError(f"cannot resume: {path}: run field '{key}' is a {type(data[key]).__name__}, "
                                  f"expected {' or '.join(t.__name__ for t in types)}")
        return cls(**{key: data[key] for key in known if key in data})


def writing(path: Path, run_dir: Path) -> AbstractContextManager[None]:
    """Turn an OSError while writing `path` of `run_dir` (read-only, full disk, quota) into a one-line RunDirError."""
    return files.writing(path, f"free space or make {run_dir} writable, then run again (cpcl train --resume "
                               f"{run_dir} continues from the last saved epoch)", RunDirError)


def prepare_run_dir(run_dir: Path, resume: bool, write_config: Callable[[Path], None]) -> None:
    """Create `run_dir`; a new run writes config.yaml (through `write_config(path)`) and starts metrics.jsonl
    afresh; a resumed one only clears what a killed write left behind."""
    with writing(run_dir, run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            remove_stale_temporaries(run_dir)
            return
        write_config(run_dir / "config.yaml")
        (run_dir / METRICS).unlink(missing_ok=True)


def save_model(run_dir: Path, name: str, model: CLIP, preprocessing: Preprocessing, extra: Mapping[str, Any]) -> None:
    """run_dir/name (best.pt, last.pt): the model with the preprocessing it trains with and `extra`, written
    atomically."""
    with writing(run_dir / name, run_dir):
        save_clip(run_dir / name, model, model.config, preprocessing, extra=extra)


def write_card(run_dir: Path) -> Path:
    """run_dir/best.md: the model card of best.pt (`cpcl.model.card`), written once results.json exists."""
    best = read_checkpoint(run_dir / "best.pt")
    with writing(run_dir / CARD, run_dir):
        (run_dir / CARD).write_text(model_card(best, best.config, "cpcl"), encoding="utf-8")
    return run_dir / CARD


def save_last(run_dir: Path, model: CLIP, preprocessing: Preprocessing, optimizer: torch.optim.Optimizer,
              progress: RunProgress, scaler: torch.amp.GradScaler) -> None:
    """last.pt; the scaler's state is {} when it is disabled (bf16 / fp32)."""
    save_model(run_dir, "last.pt", model, preprocessing,
               {"run": {**progress.to_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()}})


def load_last(run_dir: Path, model: CLIP, optimizer: torch.optim.Optimizer,
              scaler: torch.amp.GradScaler) -> RunProgress:
    """Restore model, optimiser and (when saved and enabled) the loss scaler from last.pt;
    returns the saved progress. RunDirError when last.pt holds no progress to resume."""
    path = run_dir / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"cannot resume: {path} does not exist (the run saved no epoch yet)")
    checkpoint = read_checkpoint(path)
    run = checkpoint.extra.get("run")
    missing = [key for key in ("epoch", "optimizer") if not isinstance(run, dict) or key not in run]
    if missing:
        what = "no 'run' entry" if not isinstance(run, dict) else f"no {' or '.join(missing)} in its 'run' entry"
        raise RunDirError(f"cannot resume: {path} has {what}, so it is not the last.pt of an interrupted cpcl "
                          f"train run; start a new run with --out (model.init={path} starts from its weights)")
    progress = RunProgress.from_dict(run, path)
    try:
        model.load_state_dict(checkpoint.state_dict, strict=True)
        optimizer.load_state_dict(run["optimizer"])
    except (RuntimeError, ValueError, KeyError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RunDirError(f"cannot resume: {path} does not fit this run's model or optimiser ({reason})") from None
    scaler_state = run.get("scaler", {})  # absent in runs saved before loss scaling
    if scaler_state and scaler.is_enabled():
        scaler.load_state_dict(scaler_state)
    return progress


def write_results(run_dir: Path, results: dict) -> None:
    """results.json, written atomically."""
    with writing(run_dir / "results.json", run_dir):
        atomic_write(run_dir / "results.json", lambda stream: stream.write((json.dumps(results, indent=2) + "\n")
                                                                           .encode()))


def append_record(run_dir: Path, record: EpochRecord) -> None:
    """One epoch's record at the end of metrics.jsonl."""
    with writing(run_dir / METRICS, run_dir), open(run_dir / METRICS, "a", encoding="utf-8") as stream:
        stream.write(json.dumps(record.to_json()) + "\n")


def read_records(path: Path) -> list[dict]:
    """The records of metrics.jsonl. A last line cut short (a kill or a full disk during an append) is
    dropped with a warning; any other line that is not a record is a RunDirError."""
    lines = path.read_text(encoding="utf-8").split("\n")
    torn = lines[-1] != ""  # every whole record ends with "\n"
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if torn and number == len(lines):
                log.warning("%s: dropped its last line, cut short by an interrupted write (%d characters)",
                            path, len(line))
                continue
            raise RunDirError(f"{path}: line {number} is not a JSON record ({err.msg}); the file is damaged: "
                              f"remove that line, then resume again") from None
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
            raise RunDirError(f"{path}: line {number} is not an epoch record (no integer 'epoch'); remove it, "
                              f"then resume again")
        records.append(record)
    return records


def read_epoch_records(path: Path) -> list[EpochRecord]:
    """The epoch records of metrics.jsonl (`read_records`, each through `EpochRecord.from_json`)."""
    return [EpochRecord.from_json(record, f"{path}: epoch {record['epoch']}") for record in read_records(path)]


def drop_records_from(run_dir: Path, epoch: int) -> None:
    """Keep metrics.jsonl records of epochs before `epoch` (a resumed run rewrites the rest); rewritten
    atomically, without a torn last line."""
    path = run_dir / METRICS
    if not path.is_file():
        return
    kept = [record for record in read_records(path) if record["epoch"] < epoch]
    with writing(path, run_dir):
        atomic_write(path, lambda stream: stream.write("".join(json.dumps(r) + "\n" for r in kept).encode()))
