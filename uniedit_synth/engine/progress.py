"""The progress display of the long commands (synth, report, export, audit): a live tqdm bar on a terminal, a
plain status line every 30 s in a log.

A tqdm bar written into a file (stderr redirected to a log, a batch scheduler's output) is not a bar: every
refresh becomes another line, two a second, so a half-hour run leaves thousands of frames in its log. When
stderr is not a terminal the driver gets `StatusLines` instead, which has the members the driver uses on a
bar (`n`, `total`, `disable`, `update`, `set_postfix`, `refresh`, `close`, and `with`) and writes one line per
interval, plus a last one when the run ends. `UNIEDIT_PROGRESS_INTERVAL_S` sets the interval (seconds; tests use a small one).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from tqdm import tqdm

from ..core.errors import UniEditError

INTERVAL_ENV = "UNIEDIT_PROGRESS_INTERVAL_S"
DEFAULT_INTERVAL_S = 30.0


def status_interval_s() -> float:
    """Seconds between two status lines in a log: `UNIEDIT_PROGRESS_INTERVAL_S`, else 30."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise UniEditError(f"{INTERVAL_ENV}={raw!r}: expected a number of seconds > 0 (default "
                           f"{DEFAULT_INTERVAL_S:g}), or unset it")
    return value


def is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class StatusLines:
    """A progress display for a log file: `desc: n/total unit (p %), elapsed, rate | key=value, …`, one line
    at most every `interval_s` seconds (on `refresh`), and one when closed."""

    disable = False

    def __init__(self, total: int | None, *, file: TextIO, interval_s: float, desc: str = "synth",
                 unit: str = "rec", clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.n = 0
        self.file = file
        self.interval_s = interval_s
        self.desc = desc
        self.unit = unit
        self._clock = clock
        self._started = clock()
        self._last_line = self._started
        self._postfix: dict[str, Any] = {}
        self._closed = False

    def __enter__(self) -> StatusLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        """`n` more done (tqdm's `update`): a status line if the interval has passed."""
        self.n += int(n)
        self.refresh()

    def set_postfix(self, postfix: Mapping[str, Any], refresh: bool = True) -> None:
        self._postfix = dict(postfix)
        if refresh:
            self.refresh()

    def refresh(self) -> None:
        """Write a status line if the interval has passed since the last one (or since the start)."""
        now = self._clock()
        if not self._closed and now - self._last_line >= self.interval_s:
            self._write(now)

    def close(self) -> None:
        """Write the final line (what the run ended at), once."""
        if not self._closed:
            self._write(self._clock())
            self._closed = True

    def line(self, now: float) -> str:
        elapsed = max(now - self._started, 0.0)
        count = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        if self.total:
            count += f" ({100 * self.n / self.total:.0f} %)"
        rate = f"{self.n / elapsed:.2f} {self.unit}/s" if elapsed > 0 else f"? {self.unit}/s"
        text = f"{self.desc}: {count}, {tqdm.format_interval(elapsed)} elapsed, {rate}"
        if self._postfix:
            text += " | " + ", ".join(f"{key}={value}" for key, value in self._postfix.items())
        return text

    def _write(self, now: float) -> None:
        self._last_line = now
        self.file.write(self.line(now) + "\n")
        self.file.flush()


def open_progress(total: int | None, *, enabled: bool, file: TextIO | None = None, tty: bool | None = None,
                  interval_s: float | None = None, desc: str = "synth", unit: str = "rec") -> Any:
    """The run's progress display on `file` (stderr): a tqdm bar on a terminal (or a disabled one when not
    `enabled`), `StatusLines` otherwise. `tty` and `interval_s` default to what the stream and the
    environment say."""
    file = file or sys.stderr
    if not enabled or (is_terminal(file) if tty is None else tty):
        return tqdm(total=total, unit=unit, desc=desc, disable=not enabled, dynamic_ncols=True, file=file)
    return StatusLines(total, file=file, interval_s=status_interval_s() if interval_s is None else interval_s,
                       desc=desc, unit=unit)
