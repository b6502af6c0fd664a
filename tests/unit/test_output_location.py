"""Where a run directory may live: a filesystem path (local, NFS, a mounted bucket), not an object-store URI."""

from __future__ import annotations

from pathlib import Path

import pytest

from uniedit_synth.errors import OutputDirError
from uniedit_synth.store import RunDir


@pytest.mark.parametrize("uri", ["s3://bucket/runs/a", "gs://bucket/a", "file:///tmp/a", Path("s3://bucket/a")])
def test_object_store_uris_are_refused_with_what_to_do(uri):
    with pytest.raises(OutputDirError, match="(?i)mount the bucket"):
        RunDir(uri)


@pytest.mark.parametrize("path", ["runs/a", "/mnt/s3/runs/a", "./a:b/c", "C:/runs/a"])
def test_paths_are_accepted(path, tmp_path: Path):
    assert RunDir(path).path == Path(path)
