"""The Python API: synth returns a summary, open_run gives datasets and stats, user errors raise typed errors."""

from __future__ import annotations

from pathlib import Path

import pytest

import uniedit_synth
from uniedit_synth import load_pipeline, open_run, synth
from uniedit_synth.core.errors import ConfigError, UniEditError

INLINE = {"engine": {"kind": "inline", "shard_size": 5}}


def test_synth_then_open_run(tmp_path: Path):
    summary = synth("default", out=tmp_path / "run", limit=10, overrides=INLINE)
    assert summary.read == 10 and summary.accepted + summary.rejected == 10
    assert summary.shards_done == 2 and summary.cost_usd == 0.0
    assert summary.paths["data"] == f"{tmp_path / 'run'}/data"
    assert Path(summary.paths["stats"]).is_file()

    run = open_run(tmp_path / "run")
    assert len(run.accepted) == summary.accepted and len(run.rejected) == summary.rejected
    assert set(run.accepted["accepted"]) <= {True}
    assert all(reason for reason in run.rejected["reject_reason"])
    assert run.accepted.features["edited_image"].__class__.__name__ == "Image"
    assert run.stats["read"] == 10 and run.run_info["status"] == "finished"
    # a rerun resumes: nothing is redone
    again = synth("default", out=tmp_path / "run", limit=10, overrides=INLINE)
    assert again.shards_skipped == 2 and again.shards_done == 0 and again.read == 10


def test_overrides_and_source_reach_the_config(tmp_path: Path):
    config = load_pipeline("default", {"stages": {"judge": {"thresholds": {"coherence": 5}}}})
    assert config.stages.judge.thresholds["coherence"] == 5
    assert load_pipeline(config) is config
    assert load_pipeline(config, {"seed": 7}).seed == 7


def test_typed_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown pipeline"):
        synth("no-such-pipeline", out=tmp_path / "x")
    with pytest.raises(ConfigError, match="unknown key"):
        synth("default", out=tmp_path / "x", overrides={"stages": {"judge": {"treshold": 1}}})
    with pytest.raises(UniEditError, match="not a uniedit run"):
        open_run(tmp_path)


def test_package_exports_the_api():
    assert uniedit_synth.synth is synth and uniedit_synth.open_run is open_run
    with pytest.raises(AttributeError):
        uniedit_synth.nothing_here  # noqa: B018


def test_synth_from_inside_a_running_event_loop(tmp_path: Path):
    """A notebook runs an event loop in the calling thread; synth still works there."""
    import asyncio

    async def notebook_cell():
        return synth("default", out=tmp_path / "nb", limit=4, overrides=INLINE)

    summary = asyncio.run(notebook_cell())
    assert summary.read == 4 and len(open_run(tmp_path / "nb").accepted) == summary.accepted
