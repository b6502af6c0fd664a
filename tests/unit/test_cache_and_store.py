import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from uniedit_synth.core.errors import ConfigChangedError, OutputDirError, RunLockedError
from uniedit_synth.run.cache import ResponseCache
from uniedit_synth.run.lock import RunLock
from uniedit_synth.run.store import RunDir


def test_cache_roundtrip_and_corruption(tmp_path: Path, caplog):
    cache = ResponseCache(tmp_path)
    cache.put("ab" * 32, {"data": {"x": 1}}, b"\x89PNG payload")
    entry = cache.get("ab" * 32)
    assert entry.meta == {"data": {"x": 1}} and entry.payload == b"\x89PNG payload"
    path = cache.path_for("ab" * 32)
    path.write_bytes(path.read_bytes()[:-3])  # torn write
    assert cache.get("ab" * 32) is None
    assert not path.exists() and cache.corrupt == 1
    assert "corrupt" in caplog.text
    assert cache.get("cd" * 32) is None


def test_lock_refuses_live_holder_and_takes_over_stale(tmp_path: Path, caplog):
    lock_path = tmp_path / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock_path.write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename, "start": None}))
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            RunLock(lock_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = RunLock(lock_path)
    lock.acquire()  # the holder is dead now: stale lock taken over
    assert "stale lock" in caplog.text
    assert json.loads(lock_path.read_text())["pid"] == os.getpid()
    lock.release()
    assert not lock_path.exists()


def test_manifest_torn_last_line_is_cut(tmp_path: Path, caplog):
    run = RunDir(tmp_path)
    run.create_dirs()
    run.append_manifest({"shard": 0, "records": 2, "accepted": 1})
    with open(run.manifest, "a") as fh:
        fh.write('{"shard": 1, "rec')
    entries = run.manifest_entries()
    assert [e["shard"] for e in entries] == [0]
    assert run.manifest.read_text().endswith("}\n")
    assert "torn line" in caplog.text


def test_leftover_temp_files_are_removed(tmp_path: Path):
    run = RunDir(tmp_path)
    run.create_dirs()
    (run.data_dir / ".shard-00003.parquet.123.tmp").write_bytes(b"half")
    assert run.clean_temp_files() == 1
    assert not list(run.data_dir.iterdir())


def test_unwritable_output_dir(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputDirError, match="not writable"):
        RunDir(blocker / "out").create_dirs()


def test_config_change_refused_then_forced(tmp_path: Path):
    run = RunDir(tmp_path)
    run.create_dirs()
    run.write_run_json({"pipeline_hash": "aaa", "config_view": {"seed": 0}, "prompt_hashes": {}})
    run.append_manifest({"shard": 0, "records": 1, "accepted": 1})
    with pytest.raises(ConfigChangedError, match=r"seed: 0 → 1.*--force-new-config"):
        run.check_config({"seed": 1}, {}, "bbb", force_new_config=False)
    run.check_config({"seed": 1}, {}, "bbb", force_new_config=True)
    assert not run.manifest.exists()
    assert list(tmp_path.glob("manifest.*.jsonl"))
