"""The synth progress display: a tqdm bar on a terminal, one plain status line per interval in a log file."""

from __future__ import annotations

import io

import pytest
from tqdm import tqdm

from uniedit_synth.core.errors import UniEditError
from uniedit_synth.engine.progress import INTERVAL_ENV, StatusLines, open_progress, status_interval_s


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_status_lines_write_one_line_per_interval_and_one_at_close():
    out, clock = io.StringIO(), Clock()
    lines = StatusLines(300, file=out, interval_s=30, clock=clock)
    for second in range(1, 95):  # the driver refreshes twice a second; here once a second for 94 s
        clock.now = 100.0 + second
        lines.n = 3 * second
        lines.set_postfix({"ok": second, "rej": 0, "$": "0.0100"}, refresh=False)
        lines.refresh()
    assert out.getvalue().count("\n") == 3  # at 30, 60 and 90 s
    lines.close()
    lines.close()  # closing twice writes nothing more
    written = out.getvalue().splitlines()
    assert len(written) == 4 and "\r" not in out.getvalue()
    assert written[0] == "synth: 90/300 rec (30 %), 00:30 elapsed, 3.00 rec/s | ok=30, rej=0, $=0.0100"
    assert written[-1].startswith("synth: 282/300 rec (94 %), 01:34 elapsed")


def test_status_lines_without_a_total_and_before_any_time_passed():
    out, clock = io.StringIO(), Clock()
    lines = StatusLines(None, file=out, interval_s=30, clock=clock)
    lines.refresh()
    assert out.getvalue() == ""
    lines.close()
    assert out.getvalue() == "synth: 0 rec, 00:00 elapsed, ? rec/s\n"


def test_a_log_file_gets_status_lines_a_terminal_the_bar():
    log = io.StringIO()  # not a terminal
    display = open_progress(10, enabled=True, file=log, interval_s=5)
    assert isinstance(display, StatusLines) and display.interval_s == 5
    bar = open_progress(10, enabled=True, file=io.StringIO(), tty=True)
    assert isinstance(bar, tqdm) and not bar.disable
    bar.close()
    off = open_progress(10, enabled=False, file=log)
    off.n = 5
    off.refresh()
    off.close()
    assert off.disable and log.getvalue() == ""  # --no-progress / --quiet: nothing at all


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    assert status_interval_s() == 30.0
    monkeypatch.setenv(INTERVAL_ENV, "0.5")
    assert status_interval_s() == 0.5
    assert open_progress(1, enabled=True, file=io.StringIO()).interval_s == 0.5
    for bad in ("0", "-3", "soon", "inf", "nan"):
        monkeypatch.setenv(INTERVAL_ENV, bad)
        with pytest.raises(UniEditError, match=INTERVAL_ENV):
            status_interval_s()
