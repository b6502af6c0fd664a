"""The settings a Ray run starts Ray with: Ray's unread bookkeeping off in a Ray the run starts, nothing imposed
on a cluster it joins (Ray refuses `_system_config` there)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from uniedit_synth.core.errors import UniEditError
from uniedit_synth.engine import runtime


def fake_ray(calls: list[dict]) -> types.ModuleType:
    """A `ray` whose init records its arguments and fails (the runtime stops there: no Ray is started)."""
    module = types.ModuleType("ray")
    module.is_initialized = lambda: False  # type: ignore[attr-defined]

    def init(**kwargs):
        calls.append(kwargs)
        raise ConnectionError("stopped by the test")

    module.init = init  # type: ignore[attr-defined]
    return module


@pytest.mark.parametrize("address", [None, "127.0.0.1:6379"])
def test_ray_bookkeeping_is_off_only_in_a_ray_the_run_starts(tmp_path: Path, monkeypatch, address):
    calls: list[dict] = []
    monkeypatch.setitem(sys.modules, "ray", fake_ray(calls))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(UniEditError, match="stopped by the test"):
        runtime.RayRuntime(None, str(tmp_path), "h", {}, address)  # type: ignore[arg-type]
    assert not runtime.ray_run_in_progress()  # a failed start gives the slot back
    (kwargs,) = calls
    if address is None:
        assert kwargs["address"] == "local"
        assert kwargs["_system_config"] == {"enable_metrics_collection": False, "event_stats": False,
                                            "task_events_report_interval_ms": 0}
        # a copy: ray.init adds the session's spilling directory to the dict it gets, which must not reach
        # the next run of this process through the module's constant
        assert kwargs["_system_config"] is not runtime.QUIET_SYSTEM_CONFIG
        assert kwargs["log_to_driver"] is True  # the workers' warnings still reach the terminal
    else:
        assert kwargs["address"] == address
        assert "_system_config" not in kwargs
