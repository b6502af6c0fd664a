"""`uniedit synth`'s progress as a user sees it: a live bar on a terminal, plain status lines in a log file."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios

import pytest

from tests.conftest import REPO, run_cli, uniedit_cmd

pytestmark = pytest.mark.e2e

SYNTH = ["synth", "--engine", "inline", "--limit", "12", "--shard-size", "4"]


def test_a_log_file_gets_status_lines_not_bar_frames(tmp_path):
    log = tmp_path / "synth.log"
    with log.open("w") as stderr:  # stderr redirected into a file, as `uniedit synth ... 2> synth.log`
        proc = subprocess.run(uniedit_cmd(*SYNTH, "--out", str(tmp_path / "run")), stdout=subprocess.PIPE,
                              stderr=stderr, text=True, timeout=300, cwd=REPO,
                              env={**os.environ, "UNIEDIT_PROGRESS_INTERVAL_S": "30"})
    assert proc.returncode == 0, log.read_text()
    text = log.read_text()
    assert "\r" not in text and "\x1b[" not in text  # no bar redrawn in place
    status = [line for line in text.splitlines() if line.startswith("synth: ")]
    # a run shorter than the interval: only the last line, with the totals the summary also prints
    assert len(status) == 1, text
    assert re.match(r"synth: 12/12 rec \(100 %\), \d\d:\d\d elapsed, [\d.]+ rec/s \| ok=\d+, rej=\d+", status[0])
    assert "12 records ->" in proc.stdout


def test_a_bad_interval_is_a_one_line_error(tmp_path):
    proc = run_cli(*SYNTH, "--out", str(tmp_path / "run"), env={"UNIEDIT_PROGRESS_INTERVAL_S": "often"})
    assert proc.returncode == 2
    assert "UNIEDIT_PROGRESS_INTERVAL_S='often'" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "run").exists()  # refused before the run directory is made


def test_a_terminal_gets_the_live_bar(tmp_path):
    primary, secondary = pty.openpty()  # stderr is a terminal, as in an interactive shell
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a 0-column pty draws no bar
    try:
        proc = subprocess.Popen(uniedit_cmd(*SYNTH, "--out", str(tmp_path / "run")), stdout=subprocess.DEVNULL,
                                stderr=secondary, cwd=REPO)
        os.close(secondary)  # read while it runs: a full terminal buffer would block the child
        chunks = []
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the child closed the terminal and it is drained
                break
            if not chunk:
                break
            chunks.append(chunk)
        proc.wait(timeout=300)
    finally:
        os.close(primary)
    shown = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, shown
    assert "\r" in shown and "synth:" in shown and "12/12" in shown  # tqdm redraws its bar in place
    assert not re.search(r"^synth: 12/12 rec \(100 %\)", shown, re.M)  # not the log file's status line


def test_report_export_and_audit_write_status_lines_into_a_log(tmp_path):
    """The long commands on a finished run, their stderr redirected into a log: one plain status line each (a
    command shorter than the interval writes only its last), never bar frames."""
    run = tmp_path / "run"
    assert run_cli(*SYNTH, "--out", str(run)).returncode == 0
    commands = {
        "report": (["report", str(run)], r"report: (\d+)/\1 sample \(100 %\), \d\d:\d\d elapsed"),
        "export": (["export", str(run), "-f", "hf", "-o", str(tmp_path / "hf")],
                   r"export hf: (\d+)/\1 row \(100 %\), \d\d:\d\d elapsed"),
        "audit": (["audit", str(run)], r"audit: \d+ row, \d\d:\d\d elapsed"),
    }
    for name, (args, pattern) in commands.items():
        log = tmp_path / f"{name}.log"
        with log.open("w") as stderr:
            proc = subprocess.run(uniedit_cmd(*args), stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=300,
                                  cwd=REPO, env={**os.environ, "UNIEDIT_PROGRESS_INTERVAL_S": "30"})
        text = log.read_text()
        assert proc.returncode == 0, text
        assert "\r" not in text and "\x1b[" not in text, name  # no bar redrawn in place
        status = [line for line in text.splitlines() if line.startswith(f"{name}")]
        assert len(status) == 1 and re.match(pattern, status[0]), (name, text)
