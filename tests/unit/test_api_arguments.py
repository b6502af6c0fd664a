"""The Python API answers a wrong argument, or a second Ray run in the same process, with a UniEditError that
says what to do, never a raw TypeError / AttributeError / AssertionError from deep inside (issue 30, item 9)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from uniedit_synth import load_pipeline, open_run, synth
from uniedit_synth.core.errors import ConfigError, RuntimeBusy, UniEditError

INLINE = {"engine": {"kind": "inline"}}


@pytest.mark.parametrize("kwargs, needle", [
    ({"limit": "3"}, "limit must be an int or None, not str"),
    ({"limit": True}, "limit must be an int or None, not bool"),
    ({"limit": 2.5}, "limit must be an int or None, not float"),
    ({"overrides": [1]}, "overrides must be a nested dict or None, not list"),
    ({"overrides": "engine.kind=inline"}, "overrides must be a nested dict or None, not str"),
    ({"out": 5}, "out must be a str, a path or None, not int"),
    ({"out": ""}, "out is empty"),
    ({"source": 5}, "source must be a str, a path or None, not int"),
    ({"pipeline": 5}, "pipeline must be a name, a path or a PipelineConfig, not int"),
    ({"pipeline": None}, "pipeline must be a name, a path or a PipelineConfig, not NoneType"),
    ({"progress": "no"}, "progress must be True or False, not str"),
    ({"batch": 1}, "batch must be True or False, not int"),
    ({"log_format": 1}, "log_format must be"),
])
def test_a_wrong_argument_to_synth_is_a_config_error_naming_it(tmp_path: Path, kwargs: dict, needle: str):
    args = {"out": tmp_path / "run", "limit": 1, "overrides": INLINE, **kwargs}
    pipeline = args.pop("pipeline", "default")
    with pytest.raises(ConfigError) as info:
        synth(pipeline, **args)
    assert needle in str(info.value) and str(info.value).startswith("synth(): ")
    assert not (tmp_path / "run").exists() and not Path("5").exists()


@pytest.mark.parametrize("pipeline, overrides, needle", [
    (None, None, "pipeline must be"),
    ("default", 3, "overrides must be a nested dict or None, not int"),
    ("default", ["x"], "overrides must be a nested dict or None, not list"),
])
def test_a_wrong_argument_to_load_pipeline_is_a_config_error(pipeline, overrides, needle: str):
    with pytest.raises(ConfigError, match=needle):
        load_pipeline(pipeline, overrides)


@pytest.mark.parametrize("location", [5, None, ["runs/x"]])
def test_open_run_of_a_non_path_is_a_uniedit_error(location):
    with pytest.raises(UniEditError, match="open_run\\(\\): location must be"):
        open_run(location)


def test_paths_are_still_accepted(tmp_path: Path):
    summary = synth("default", out=tmp_path / "run", limit=1, overrides=INLINE)
    assert summary.read == 1
    assert open_run(tmp_path / "run").stats["read"] == 1


def test_a_ray_run_while_another_holds_the_process_is_refused_before_touching_its_output(tmp_path: Path):
    from uniedit_synth.engine import runtime

    assert runtime._RAY_RUN.acquire(blocking=False)  # as a Ray run in another thread holds it
    try:
        with pytest.raises(RuntimeBusy, match="another Ray run is going on in this process"):
            synth("default", out=tmp_path / "second", limit=1, overrides={"engine": {"kind": "ray"}})
        assert not (tmp_path / "second").exists()
        with pytest.raises(RuntimeBusy):  # the runtime itself holds the slot too (two runs racing past the check)
            runtime.RayRuntime(None, str(tmp_path), "h", {}, None)  # type: ignore[arg-type]
        # an inline run needs no Ray: it goes on
        assert synth("default", out=tmp_path / "inline", limit=1, overrides=INLINE).read == 1
    finally:
        runtime._RAY_RUN.release()


@pytest.mark.ray
def test_two_ray_runs_at_once_in_one_process(tmp_path: Path):
    from uniedit_synth.engine import runtime

    results: dict[str, object] = {}

    def first() -> None:
        try:
            results["first"] = synth("default", out=tmp_path / "first", limit=4, overrides={
                "engine": {"workers": 1}, "backends": {"text": {"options": {"latency_s": 0.2}}}})
        except BaseException as exc:  # noqa: BLE001 - reported below
            results["first"] = exc

    thread = threading.Thread(target=first)
    thread.start()
    while thread.is_alive() and not runtime.ray_run_in_progress():
        thread.join(0.05)
    assert runtime.ray_run_in_progress(), results
    with pytest.raises(RuntimeBusy):
        synth("default", out=tmp_path / "second", limit=2)
    thread.join(300)
    assert getattr(results["first"], "read", None) == 4, results["first"]
    assert not runtime.ray_run_in_progress()
    # and once the first is done, the next Ray run in this process goes ahead
    assert synth("default", out=tmp_path / "third", limit=2).read == 2
