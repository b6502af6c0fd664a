"""The one pid check (run/processes.py) that the run lock, export staging and Ray temp-dir cleanups share."""

from __future__ import annotations

import os
import subprocess
import sys

from uniedit_synth.run.processes import process_alive, process_start_time


def test_a_running_process_is_alive_and_a_reaped_one_is_not():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its pid names no process now (until reused, which a fresh pid is not this soon)
    assert process_alive(os.getpid())
    assert not process_alive(child.pid)
    assert not process_alive(0) and not process_alive(-1)  # never a signal to a process group


def test_a_reused_pid_with_another_start_time_is_not_the_recorded_process():
    start = process_start_time(os.getpid())
    assert process_alive(os.getpid(), start)
    if start is not None:  # Linux: /proc holds start times
        assert not process_alive(os.getpid(), str(int(start) + 1))
