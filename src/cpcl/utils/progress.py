"""Progress reporting for long loops, without a third-party dependency.

On an interactive terminal a single status line is redrawn in place on stderr; otherwise
(CI, pipes, log files) a log record is written about every 10%, but no sooner than LOG_FLOOR seconds
after the last one, and one closing record when a line was held back, so logs stay short: a loop
that takes no time writes one line, not ten. In a torchrun launch only rank 0 reports.
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

LOG_FLOOR = 5.0  # seconds between two progress records outside a terminal


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
        self._start = self._last_draw = time.perf_counter()
        self._next_log_fraction = 0.1
        self._logged = 0  # count at the last record written (outside a terminal)

    def __enter__(self) -> Progress:
        self._start = self._last_draw = time.perf_counter()
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
            if now - self._last_draw >= LOG_FLOOR:
                self._record(now)

    def close(self) -> None:
        if self.enabled and self._interactive:
            sys.stderr.write("\r" + self._line(time.perf_counter()) + "\n")
            sys.stderr.flush()
        elif self.enabled and self.total and self.count > self._logged:
            self._record(time.perf_counter())  # the line the floor held back: where the loop ended
        self.enabled = False

    def _record(self, now: float) -> None:
        self._last_draw, self._logged = now, self.count
        log.info(self._line(now))

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
