"""The response cache: every backend reply stored under `<out>/cache/`, keyed by sha256 of its full request.

One file per entry (`cache/ab/abcdef….entry`), written to a temp name and renamed (on object storage: one
upload, visible only once complete; runfs.py), so readers never see a half-written entry and any number of
worker processes can share the directory. An entry is a JSON header line followed by a binary payload (an
edited image); the header holds the payload's length and sha256, so a torn or truncated entry is detected,
dropped with a warning and treated as a miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .fs import RunFS, as_run_fs

log = logging.getLogger(__name__)


@dataclass
class CacheEntry:
    meta: dict[str, Any]
    payload: bytes = b""


class ResponseCache:
    def __init__(self, root: str | os.PathLike[str] | RunFS):
        """`root`: the cache folder (`<run>/cache`), a path, a pyarrow filesystem URI or a RunFS."""
        self.fs = as_run_fs(root)
        self.root = self.fs.local_root  # None on a remote filesystem
        self.hits = 0
        self.misses = 0
        self.corrupt = 0

    @staticmethod
    def rel_path(key: str) -> str:
        return f"{key[:2]}/{key}.entry"

    def path_for(self, key: str) -> Path | str:
        """Where the entry lives: a Path for a local cache, else its (redacted) URI."""
        if self.root is not None:
            return self.root / key[:2] / f"{key}.entry"
        return self.fs.display_path(self.rel_path(key))

    def get(self, key: str) -> CacheEntry | None:
        blob = self.fs.read_bytes(self.rel_path(key))
        if blob is None:
            self.misses += 1
            return None
        entry = self._decode(blob)
        if entry is None:
            self.corrupt += 1
            self.misses += 1
            log.warning("cache entry %s is corrupt (torn write?); dropping it, the call will be made again",
                        self.path_for(key))
            self.fs.delete(self.rel_path(key))
            return None
        self.hits += 1
        return entry

    def peek(self, key: str) -> tuple[CacheEntry | None, bool]:
        """Read an entry without side effects: (entry, exists). A corrupt entry is (None, True)."""
        blob = self.fs.read_bytes(self.rel_path(key))
        if blob is None:
            return None, False
        return self._decode(blob), True

    def put(self, key: str, meta: dict[str, Any], payload: bytes = b"") -> None:
        header = dict(meta)
        header["_payload_len"] = len(payload)
        header["_payload_sha256"] = hashlib.sha256(payload).hexdigest()
        line = json.dumps(header, sort_keys=True, ensure_ascii=False).encode() + b"\n"
        self.fs.write_bytes(self.rel_path(key), line + payload, what=f"the response cache ({self.fs.display})")

    @staticmethod
    def _decode(blob: bytes) -> CacheEntry | None:
        newline = blob.find(b"\n")
        if newline < 0:
            return None
        try:
            header = json.loads(blob[:newline])
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        payload = blob[newline + 1 :]
        if not isinstance(header, dict) or header.pop("_payload_len", None) != len(payload):
            return None
        if header.pop("_payload_sha256", None) != hashlib.sha256(payload).hexdigest():
            return None
        return CacheEntry(meta=header, payload=payload)

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "corrupt": self.corrupt}
