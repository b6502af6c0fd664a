"""A source's identity for resume: what its rows are made of (files' sizes and modification times, a data
set's fingerprint), known without reading a row.

A finished shard records the identity it was made from; a rerun whose source has the same identity trusts the
manifest and reads no rows, and one whose identity changed checks its finished shards' rows again (the engine's
verify jobs). An identity is a hash of `stat()` results, so an edit that keeps a file's size and
modification time (`touch -r`) is not seen: `uniedit synth --verify-source` reads and compares every shard.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .arrange import ArrangedSource
from .base import Source

#: image folders: at most this many files are stat'ed for the identity (a bigger folder has none: no fast rerun)
MAX_FOLDER_FILES = 2_000_000


def _stat(path: Path) -> list[Any]:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _folder(folder: Path) -> list[list[Any]] | None:
    """Every file under an image folder, with its size and mtime: an image replaced in place changes it."""
    entries: list[list[Any]] = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            entries.append(_stat(Path(root) / name))
            if len(entries) > MAX_FOLDER_FILES:
                return None
    return entries


def describe_identity(source: Source) -> dict[str, Any] | None:
    """What the identity is made of, or None for a source that has none (a stream, a plugin's source)."""
    from .files import METADATA_FILES, ParquetSource, RowFileSource
    from .hf import HFSource
    from .scenes import ScenesSource

    inner = source.inner if isinstance(source, ArrangedSource) else source
    if isinstance(inner, ScenesSource):  # generated from the config alone (which the pipeline hash covers)
        return {"kind": "scenes"}
    if isinstance(inner, ParquetSource):
        return {"kind": "parquet", "files": [_stat(p) for p in inner.paths]}
    if isinstance(inner, RowFileSource):
        if inner.path.name in METADATA_FILES:
            files = _folder(inner.path.parent)
            return None if files is None else {"kind": "image-folder", "files": files}
        return {"kind": "rows", "files": [_stat(inner.path)]}
    if isinstance(inner, HFSource):
        dataset = inner.dataset
        fingerprint = getattr(dataset, "_fingerprint", None)
        if not fingerprint:
            return None
        files = []
        for entry in getattr(dataset, "cache_files", None) or []:
            name = entry.get("filename") if isinstance(entry, dict) else None
            if name and Path(name).exists():
                files.append(_stat(Path(name)))
        return {"kind": "hf", "fingerprint": fingerprint, "rows": len(dataset), "files": files}
    return None


def source_identity(source: Source) -> str | None:
    """A short hash of `describe_identity`, or None when the source has no identity (every rerun reads it)."""
    try:
        described = describe_identity(source)
    except OSError:  # a file vanished between opening and stat: no identity, the rerun reads and checks
        return None
    if described is None:
        return None
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:32]
