"""runfs (a run root on a local path or a pyarrow filesystem) and the store on object-store semantics."""

from __future__ import annotations

import json
import os
import pickle
import socket
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from uniedit_synth.core.errors import RunLockedError
from uniedit_synth.run import lock as run_lock
from uniedit_synth.run.cache import ResponseCache
from uniedit_synth.run.fs import ArrowRunFS, LocalRunFS, RunFS, open_run_fs
from uniedit_synth.run.lock import RunLock
from uniedit_synth.run.store import RunDir, write_shard_table


@pytest.fixture(params=["local", "arrow-local", "arrow-mock"])
def fs(request, tmp_path: Path) -> RunFS:
    """The same root three ways: POSIX paths, and the object-store code path on a local disk and on pyarrow's
    in-memory mock filesystem."""
    if request.param == "local":
        return LocalRunFS(tmp_path / "run")
    if request.param == "arrow-local":
        return ArrowRunFS(str(tmp_path / "run"), filesystem=pafs.LocalFileSystem())
    return ArrowRunFS("run", filesystem=pafs._MockFileSystem())


def test_read_write_list_size_delete_move(fs: RunFS):
    assert fs.read_bytes("data/x.bin") is None and fs.size("data/x.bin") is None and not fs.exists("data/x.bin")
    assert fs.list("data") == []
    fs.write_bytes("data/shard-00001.parquet", b"one")
    fs.write_bytes("data/shard-00000.parquet", b"zero!")
    fs.write_bytes("data/notes.txt", b"n")
    assert fs.read_bytes("data/shard-00000.parquet") == b"zero!" and fs.size("data/shard-00000.parquet") == 5
    assert fs.list("data", "shard-*.parquet") == ["shard-00000.parquet", "shard-00001.parquet"]
    assert fs.list("data") == ["notes.txt", "shard-00000.parquet", "shard-00001.parquet"]
    assert fs.exists("data") and fs.mtime("data/notes.txt") is not None
    fs.write_bytes("data/notes.txt", b"replaced")
    assert fs.read_bytes("data/notes.txt") == b"replaced"
    fs.move("data/notes.txt", "old/notes.txt")
    assert fs.read_bytes("old/notes.txt") == b"replaced" and fs.read_bytes("data/notes.txt") is None
    fs.delete("old/notes.txt")
    fs.delete("old/notes.txt")  # a missing file is fine
    assert not fs.exists("old/notes.txt")
    child = fs.child("data")
    assert child.read_bytes("shard-00001.parquet") == b"one"
    assert child.display_path("x").endswith("data/x")


def test_no_temp_files_are_left_and_parquet_reads_back(fs: RunFS):
    record = write_shard_table(fs, "data", 3, pa.table({"id": ["a", "b"]}))
    assert record["path"] == "data/shard-00003.parquet" and record["rows"] == 2
    assert fs.list("data") == ["shard-00003.parquet"]  # the temp name is gone (or never existed)
    assert fs.parquet_file(record["path"]).read().column("id").to_pylist() == ["a", "b"]
    assert fs.size(record["path"]) == record["bytes"]


def test_cache_goes_through_the_filesystem(fs: RunFS, caplog):
    cache = ResponseCache(fs.child("cache"))
    key = "ab" * 32
    cache.put(key, {"data": {"x": 1}}, b"payload")
    assert cache.get(key).payload == b"payload"
    assert fs.read_bytes(f"cache/ab/{key}.entry") is not None
    fs.write_bytes(f"cache/ab/{key}.entry", fs.read_bytes(f"cache/ab/{key}.entry")[:-2])  # torn
    assert cache.get(key) is None and cache.corrupt == 1 and "corrupt" in caplog.text
    assert not fs.exists(f"cache/ab/{key}.entry")


def test_runfs_pickles_to_its_location(tmp_path: Path):
    local = pickle.loads(pickle.dumps(LocalRunFS(tmp_path)))
    assert isinstance(local, LocalRunFS) and local.root == tmp_path
    remote = open_run_fs("mock:///bucket/runs/x").child("cache")
    clone = pickle.loads(pickle.dumps(remote))
    assert isinstance(clone, ArrowRunFS) and clone.root == remote.root == "bucket/runs/x/cache"
    assert clone.location == "mock:///bucket/runs/x" and clone.display == "mock:///bucket/runs/x/cache"


# -- the store on object-store semantics -------------------------------------------------------------------
@pytest.fixture
def remote_run() -> RunDir:
    return RunDir(ArrowRunFS("bucket/run", filesystem=pafs._MockFileSystem()))


def test_remote_manifest_is_one_object_per_shard(remote_run: RunDir):
    run = remote_run
    assert run.remote and run.path is None and not run.is_run()
    run.create_dirs()
    run.append_manifest({"shard": 1, "records": 2, "accepted": 1, "files": {}})
    run.append_manifest({"shard": 0, "records": 2, "accepted": 2, "files": {}})
    run.append_manifest({"shard": 1, "records": 2, "accepted": 0, "files": {}})  # shard 1 redone
    names = run.fs.list("manifest")
    assert len(names) == 3 and all(n.startswith(("shard-00000.", "shard-00001.")) for n in names)
    assert [e["shard"] for e in run.manifest_entries()] == [1, 0, 1]
    assert run.latest_by_shard()[1]["accepted"] == 0 and run.is_run()
    assert run.clean_temp_files() == 0


def test_remote_shard_integrity_and_config_archive(remote_run: RunDir):
    run = remote_run
    record = write_shard_table(run.fs, "data", 0, pa.table({"id": ["a"]}))
    entry = {"shard": 0, "records": 1, "accepted": 1, "files": {"data": record}}
    run.append_manifest(entry)
    assert run.shard_files_intact(entry) and run.shard_files("data") == ["data/shard-00000.parquet"]
    run.fs.write_bytes(record["path"], b"short")
    assert not run.shard_files_intact(entry)
    run.write_run_json({"pipeline_hash": "aaa", "config_view": {"seed": 0}, "prompt_hashes": {}})
    run.check_config({"seed": 1}, {}, "bbb", force_new_config=True)
    assert run.manifest_entries() == [] and run.shard_files("data") == []
    archived = [info.path for info in run.fs.filesystem.get_file_info(pafs.FileSelector("bucket/run", recursive=True))
                if "/manifest." in info.path and info.path.endswith(".json")]
    assert len(archived) == 1


def _write_lock(fs: RunFS, **fields) -> None:
    fs.write_bytes(".lock", json.dumps({"pid": 4242, "host": "other-host", "since": "earlier", **fields}).encode())


def test_remote_lock_fresh_heartbeat_refuses_stale_is_taken_over(remote_run: RunDir, caplog):
    fs = remote_run.fs
    _write_lock(fs, heartbeat=time.time() - 10)
    with pytest.raises(RunLockedError, match="pid 4242 on other-host"):
        RunLock(".lock", fs=fs).acquire()
    _write_lock(fs, heartbeat=time.time() - run_lock.STALE_AFTER_S - 5)
    lock = RunLock(".lock", fs=fs)
    lock.acquire()
    try:
        assert "heartbeat is" in caplog.text and "taking over" in caplog.text
        holder = json.loads(fs.read_bytes(".lock"))
        assert holder["run_id"] == lock.run_id and holder["host"] == socket.gethostname()
        with pytest.raises(RunLockedError, match="in use by another run"):
            RunLock(".lock", fs=fs).acquire()  # same host, live pid: held
    finally:
        lock.release()
    assert not fs.exists(".lock")


def test_remote_lock_of_a_dead_process_on_this_host_is_stale(remote_run: RunDir, caplog):
    fs = remote_run.fs
    _write_lock(fs, host=socket.gethostname(), pid=2**22 + 12345, heartbeat=time.time())
    lock = RunLock(".lock", fs=fs)
    lock.acquire()
    lock.release()
    assert "stale lock" in caplog.text


def test_local_lock_from_another_host_follows_the_heartbeat(tmp_path: Path, caplog):
    fs = LocalRunFS(tmp_path)
    _write_lock(fs, heartbeat=time.time())
    with pytest.raises(RunLockedError, match="other-host"):
        RunLock(tmp_path / ".lock").acquire()
    _write_lock(fs)  # an old-style lock without a heartbeat: its mtime counts
    old = time.time() - run_lock.STALE_AFTER_S - 60
    os.utime(tmp_path / ".lock", (old, old))
    lock = RunLock(tmp_path / ".lock")
    lock.acquire()
    assert "taking over" in caplog.text
    lock.release()
    assert not (tmp_path / ".lock").exists()


def test_heartbeat_is_refreshed_while_held(remote_run: RunDir, monkeypatch):
    monkeypatch.setattr(run_lock, "HEARTBEAT_S", 0.05)
    lock = RunLock(".lock", fs=remote_run.fs)
    lock.acquire()
    try:
        first = json.loads(remote_run.fs.read_bytes(".lock"))["heartbeat"]
        deadline = time.monotonic() + 5
        while json.loads(remote_run.fs.read_bytes(".lock"))["heartbeat"] == first:
            assert time.monotonic() < deadline, "the heartbeat was never refreshed"
            time.sleep(0.02)
    finally:
        lock.release()
    assert not remote_run.fs.exists(".lock")


def test_local_layout_is_unchanged(tmp_path: Path):
    """A local run still has manifest.jsonl (appended) and no manifest/ folder."""
    run = RunDir(tmp_path)
    run.create_dirs()
    run.append_manifest({"shard": 0, "records": 1, "accepted": 1})
    assert run.manifest.read_text().count("\n") == 1 and not (tmp_path / "manifest").exists()
    write_shard_table(tmp_path, "data", 0, pa.table({"id": ["a"]}))
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["shard-00000.parquet"]
    assert pq.read_table(tmp_path / "data" / "shard-00000.parquet").num_rows == 1


def test_a_local_write_skips_a_stale_temp_name_and_leaves_no_temp_file(tmp_path: Path):
    from uniedit_synth.run import fs as runfs

    fs = LocalRunFS(tmp_path / "run")
    fs.write_bytes("ab/first.entry", b"one")  # creates the folder on the way
    # a killed process with this pid left the temp name the next write would use: it is not written into
    upcoming = next(runfs._TMP_SEQ) + 1
    stale = tmp_path / "run" / "ab" / f".second.entry.{os.getpid()}-{upcoming}.tmp"
    stale.write_bytes(b"someone else's half")
    fs.write_bytes("ab/second.entry", b"two" * 100_000)
    assert fs.read_bytes("ab/second.entry") == b"two" * 100_000 and fs.read_bytes("ab/first.entry") == b"one"
    assert stale.read_bytes() == b"someone else's half"
    assert sorted(p.name for p in (tmp_path / "run" / "ab").iterdir()) == [stale.name, "first.entry", "second.entry"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "run" / "ab" / "first.entry").stat().st_mode & 0o777 == 0o666 & ~umask  # as open() made it


def test_a_failed_local_write_is_a_user_error_and_leaves_no_temp_file(tmp_path: Path, monkeypatch):
    from uniedit_synth.core.errors import DiskFullError
    from uniedit_synth.run import fs as runfs

    def full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runfs.os, "write", full)
    fs = LocalRunFS(tmp_path / "run")
    with pytest.raises(DiskFullError, match="Free some space"):
        fs.write_bytes("ab/x.entry", b"data")
    monkeypatch.undo()
    assert list((tmp_path / "run" / "ab").iterdir()) == [] and fs.read_bytes("ab/x.entry") is None
