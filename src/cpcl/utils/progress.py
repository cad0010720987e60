"""Progress reporting for long loops, without a third-party dependency.

On an interactive terminal a single status line is redrawn in place on stderr; otherwise
(CI, pipes, log files) a log record is written about every 10% so logs stay short. In a torchrun
launch only rank 0 reports.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


def _fmt_seconds(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """Counts completed units of work and reports rate and remaining time.

    Use as a context manager and call `update(n)`; `track()` wraps an iterable.
    """

    def __init__(self, total: int | None, desc: str, unit: str = "it", enabled: bool = True):
        self.total = total
        self.desc = desc
        self.unit = unit
        self.enabled = enabled and os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 alone
        self.count = 0
        self.postfix = ""  # shown after the rate, e.g. a running loss; the caller sets it before update()
        self._interactive = sys.stderr.isatty()
        self._start = time.perf_counter()
        self._last_draw = 0.0
        self._next_log_fraction = 0.1

    def __enter__(self) -> Progress:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.count += n
        if not self.enabled:
            return
        now = time.perf_counter()
        if self._interactive:
            if now - self._last_draw >= 0.1 or self.count == self.total:
                self._last_draw = now
                sys.stderr.write("\r" + self._line(now))
                sys.stderr.flush()
        elif self.total and self.count >= self._next_log_fraction * self.total:
            while self._next_log_fraction * self.total <= self.count:
                self._next_log_fraction += 0.1
            log.info(self._line(now))

    def close(self) -> None:
        if self.enabled and self._interactive:
            sys.stderr.write("\r" + self._line(time.perf_counter()) + "\n")
            sys.stderr.flush()
            self.enabled = False

    def _line(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-9)
        rate = self.count / elapsed
        postfix = f" {self.postfix}" if self.postfix else ""
        if self.total:
            remaining = (self.total - self.count) / rate if rate > 0 else 0.0
            return (
                f"{self.desc}: {self.count}/{self.total} {self.unit} "
                f"[{_fmt_seconds(elapsed)}<{_fmt_seconds(remaining)}, {rate:.1f} {self.unit}/s]{postfix}"
            )
        return f"{self.desc}: {self.count} {self.unit} [{_fmt_seconds(elapsed)}, {rate:.1f} {self.unit}/s]{postfix}"


def track(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Yield `items` while reporting progress; `total` defaults to `len(items)` when it has one."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc, unit) as progress:
        for item in items:
            yield item
            progress.update()
