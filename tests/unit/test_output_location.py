"""Where a run directory may live: a filesystem path (local, NFS, a mounted bucket) or a pyarrow filesystem URI."""

from __future__ import annotations

from pathlib import Path

import pytest

from uniedit_synth.run.fs import ArrowRunFS, LocalRunFS, normalize_location, redact_location
from uniedit_synth.run.store import RunDir


@pytest.mark.parametrize("path", ["runs/a", "/mnt/s3/runs/a", "./a:b/c", "C:/runs/a"])
def test_paths_are_accepted(path, tmp_path: Path):
    assert RunDir(path).path == Path(path)
    assert isinstance(RunDir(path).fs, LocalRunFS) and not RunDir(path).remote


def test_file_uri_is_a_local_directory(tmp_path: Path):
    run = RunDir(f"file://{tmp_path}/a")
    assert run.path == tmp_path / "a" and not run.remote
    assert RunDir(Path(f"file://{tmp_path}/a")).path == tmp_path / "a"  # `file:/…` after a Path


def test_object_store_uri_is_remote_with_no_local_paths():
    run = RunDir("mock:///runs/a")
    assert run.remote and isinstance(run.fs, ArrowRunFS)
    assert run.path is None and run.manifest is None and run.display == "mock:///runs/a"


@pytest.mark.parametrize(
    ("given", "expected"),
    [("s3:/bucket/a", "s3://bucket/a"), (Path("s3://bucket/a"), "s3://bucket/a"), ("gs://b/x", "gs://b/x"),
     ("file:/tmp/a", "file:///tmp/a"), ("runs/a", "runs/a"), ("C:/runs/a", "C:/runs/a")],
)
def test_uris_that_went_through_a_path_are_repaired(given, expected):
    assert normalize_location(given) == expected


def test_redacted_location_has_no_keys_and_no_query():
    uri = "s3://AKIDEXAMPLE:s3cr3t@bucket/runs/x?endpoint_override=127.0.0.1:9000&scheme=http"
    shown = redact_location(uri)
    assert shown == "s3://***@bucket/runs/x"
    assert "s3cr3t" not in shown and "AKID" not in shown and "endpoint" not in shown
    assert redact_location("s3://bucket/runs/x?region=eu-west-1") == "s3://bucket/runs/x"
    assert redact_location("runs/a") == "runs/a"
