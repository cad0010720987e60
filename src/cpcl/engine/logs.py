"""What a run writes for people to read: `train.log` in the run directory (the records of every cpcl
logger, as the console shows them, progress lines included) and, with `log.tensorboard: true`,
TensorBoard event files in `RUN_DIR/tensorboard`: each loss term, the total and the lr per optimizer step
(`step/`), and per epoch the epoch means (`train/`), val metrics (`val/`), clusters, outliers and OPLM
counts (`clusters/`), the clustering chosen on val (`cluster_select/`), the `oracle_` diagnostics
(`oracle/`) and phase times (`time/`), all on the global optimizer step; at the end, the test metrics (`test/`),
the config as hparams and a few retrieval examples as images (`retrieval/`). Rank 0 alone writes them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType
from typing import Any

from cpcl.engine.record import EpochRecord
from cpcl.engine.rundir import writing
from cpcl.evaluation.report import Example, example_strip
from cpcl.utils.errors import ConfigError

TRAIN_LOG = "train.log"
TENSORBOARD_DIR = "tensorboard"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # as the console (cpcl.cli)


def hparams(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict flattened to the dotted keys TensorBoard's hparams take: numbers, strings and bools
    as they are, lists and None as text."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(hparams(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


class RunLog:
    """Context manager: train.log attached to the `cpcl` logger from the start of a run, then (`begin`)
    the TensorBoard writer when `tensorboard`. resume: train.log is appended to, and TensorBoard events
    from the resumed step on (what the interrupted epoch logged) are dropped; a new run starts train.log
    afresh. enabled=False (ranks other than 0) writes nothing."""

    def __init__(self, run_dir: Path, tensorboard: bool, enabled: bool = True, resume: bool = False) -> None:
        self.run_dir, self.tensorboard, self.enabled, self.resume = run_dir, tensorboard, enabled, resume
        self._handler: logging.Handler | None = None
        self._writer_class: Any = None
        self._writer: Any = None

    def __enter__(self) -> RunLog:
        if not self.enabled:
            return self
        if self.tensorboard:  # checked before the run loads anything
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("log.tensorboard=true needs the tensorboard package: pip install "
                                  "'cpcl[tensorboard]', or set log.tensorboard=false") from None
            self._writer_class = SummaryWriter
        with writing(self.run_dir / TRAIN_LOG, self.run_dir):
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._handler = logging.FileHandler(self.run_dir / TRAIN_LOG, mode="a" if self.resume else "w",
                                                encoding="utf-8")
        self._handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
        logging.getLogger("cpcl").addHandler(self._handler)
        return self

    def begin(self, first_step: int) -> None:
        """Open the TensorBoard writer at global step `first_step` (the run's optimizer steps so far)."""
        if self._writer_class is not None:
            purge = first_step if self.resume and first_step > 0 else None
            self._writer = self._writer_class(str(self.run_dir / TENSORBOARD_DIR), purge_step=purge)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._handler is not None:
            if error is not None and not isinstance(error, KeyboardInterrupt):  # the console has it from the CLI
                self._handler.handle(logging.LogRecord(__name__, logging.ERROR, __file__, 0, "run stopped: %s",
                                                       (error,), None))
            logging.getLogger("cpcl").removeHandler(self._handler)
            self._handler.close()
        if self._writer is not None:
            self._writer.close()

    def step(self, global_step: int, values: dict[str, float]) -> None:
        """One optimizer step's loss terms, total and lr (TensorBoard only)."""
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(f"step/{key}", value, global_step)

    def epoch(self, global_step: int, record: EpochRecord) -> None:
        """Every measurement of an epoch record, tagged GROUP/NAME by `EpochRecord.groups` (TensorBoard only)."""
        if self._writer is None:
            return
        for group, values in record.groups().items():
            for name, value in values.items():
                self._writer.add_scalar(f"{group}/{name}", value, global_step)
        self._writer.flush()

    def final(self, global_step: int, results: dict[str, Any], config: dict[str, Any],
              examples: list[Example]) -> None:
        """The end of the run (TensorBoard only): test metrics of the best and last checkpoints (`test/`), the config
        as hparams with the best checkpoint's test metrics, and each retrieval example as an image (`retrieval/`,
        green frame: the query's person) with its query as text."""
        if self._writer is None:
            return
        test = results.get("test", {})
        for which in ("best", "last"):
            for metric, value in test.get(which, {}).items():
                self._writer.add_scalar(f"test/{which}_{metric}", value, global_step)
        metrics = {f"hparam/test_{metric}": value for metric, value in test.get("best", {}).items()}
        self._writer.add_hparams(hparams(config), metrics, run_name=".", global_step=global_step)
        for i, example in enumerate(examples):
            self._writer.add_image(f"retrieval/{i}", example_strip(example), global_step, dataformats="HWC")
            ranks = ", ".join(f"#{rank} {score:.3f}{' hit' if hit else ''}"
                              for rank, (_, score, hit) in enumerate(example.hits, start=1))
            self._writer.add_text(f"retrieval/{i}", f"\u201c{example.query}\u201d: {ranks}", global_step)
        self._writer.flush()
