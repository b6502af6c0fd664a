"""The response cache: every backend reply stored under `<out>/cache/`, keyed by sha256 of its full request.

One file per entry (`cache/ab/abcdef….entry`), written to a temp name and renamed (on object storage: one
upload, visible only once complete; runfs.py), so readers never see a half-written entry and any number of
worker processes can share the directory. An entry is a JSON header line followed by a binary payload (an
edited image); the header holds the payload's length and sha256, so a torn or truncated entry is detected,
dropped with a warning and treated as a miss.

Packs keep a big run's directory small: once a shard is final, the worker copies the entries its calls used
into one file, `cache/packs/shard-NNNNN.pack` (the entries back to back, then a JSON index key → offset and
length, its length and a magic), and the loose copies are deleted at the end of the run (`sweep`, by the
driver, when no worker can be reading them). A packed entry is found by its request key like a loose one, by
every later run, whatever its config: a pack is read at a process's first miss. Local run directories only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .fs import RunFS, as_run_fs

log = logging.getLogger(__name__)


@dataclass
class CacheEntry:
    meta: dict[str, Any]
    payload: bytes = b""


PACKS = "packs"
PACK_MAGIC = b"UEPACK01"
_TRAILER = struct.Struct("<Q")


def pack_name(shard: int) -> str:
    return f"shard-{shard:05d}.pack"


class ResponseCache:
    def __init__(self, root: str | os.PathLike[str] | RunFS):
        """`root`: the cache folder (`<run>/cache`), a path, a pyarrow filesystem URI or a RunFS."""
        self.fs = as_run_fs(root)
        self.root = self.fs.local_root  # None on a remote filesystem
        self.hits = 0
        self.misses = 0
        self.corrupt = 0
        #: key -> (pack file name, offset, length); read at the first miss of a loose entry
        self._packed: dict[str, tuple[str, int, int]] | None = None

    # -- packs ---------------------------------------------------------------------------------------------
    def _pack_index(self, name: str) -> dict[str, list[int]]:
        """The index of one pack (empty when it is unreadable: its entries then count as misses)."""
        assert self.root is not None
        try:
            with open(self.root / PACKS / name, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                end = fh.tell()
                if end < _TRAILER.size + len(PACK_MAGIC):
                    return {}
                fh.seek(end - _TRAILER.size - len(PACK_MAGIC))
                tail = fh.read()
                if tail[_TRAILER.size:] != PACK_MAGIC:
                    return {}
                (length,) = _TRAILER.unpack(tail[:_TRAILER.size])
                fh.seek(end - _TRAILER.size - len(PACK_MAGIC) - length)
                index = json.loads(fh.read(length))
        except (OSError, ValueError):
            return {}
        return index if isinstance(index, dict) else {}

    def _load_packs(self) -> dict[str, tuple[str, int, int]]:
        if self._packed is None:
            self._packed = {}
            folder = self.root / PACKS if self.root is not None else None
            if folder is not None and folder.is_dir():
                for path in sorted(folder.glob("shard-*.pack")):
                    for key, (offset, length) in self._pack_index(path.name).items():
                        self._packed[key] = (path.name, int(offset), int(length))
        return self._packed

    def _packed_blob(self, key: str) -> bytes | None:
        if self.root is None:
            return None
        where = self._load_packs().get(key)
        if where is None:
            return None
        for attempt in range(2):
            name, offset, length = where
            try:
                with open(self.root / PACKS / name, "rb") as fh:
                    fh.seek(offset)
                    blob = fh.read(length)
            except OSError:
                blob = b""
            if self._decode(blob) is not None or attempt:
                return blob
            # the pack was rewritten (its shard redone) since its index was read: read the index again
            fresh = self._pack_index(name).get(key)
            if fresh is None:
                return None
            where = (name, int(fresh[0]), int(fresh[1]))
            self._load_packs()[key] = where
        return None

    def packed_keys(self) -> list[str]:
        """The keys held in packs (sorted), for a scan of the whole cache."""
        return sorted(self._load_packs()) if self.root is not None else []

    def locate(self, key: str) -> tuple[Path, int, int] | None:
        """Where a packed entry is: (pack file, offset, length); None when it is not packed."""
        where = self._load_packs().get(key) if self.root is not None else None
        return None if where is None else (self.root / PACKS / where[0], where[1], where[2])

    def pack(self, shard: int, keys: Iterable[str]) -> int:
        """Copy the entries of `keys` (a final shard's calls) into the shard's pack, with those of an earlier
        pack of the same shard (a redone shard keeps every reply it ever had). Returns entries packed."""
        if self.root is None:
            return 0
        entries: dict[str, bytes] = {}
        name = pack_name(shard)
        for key, (offset, length) in self._pack_index(name).items():
            with open(self.root / PACKS / name, "rb") as fh:
                fh.seek(int(offset))
                blob = fh.read(int(length))
            if self._decode(blob) is not None:
                entries[key] = blob
        for key in dict.fromkeys(keys):
            if not key or key in entries:
                continue
            blob = self.fs.read_bytes(self.rel_path(key))
            if blob is not None and self._decode(blob) is not None:
                entries[key] = blob
        if not entries:
            return 0
        index: dict[str, list[int]] = {}
        offset = 0
        for key, blob in entries.items():
            index[key] = [offset, len(blob)]
            offset += len(blob)
        footer = json.dumps(index, separators=(",", ":")).encode()
        data = b"".join(entries.values()) + footer + _TRAILER.pack(len(footer)) + PACK_MAGIC
        self.fs.write_bytes(f"{PACKS}/{name}", data, fsync=True, what=f"the response cache ({self.fs.display})")
        return len(entries)

    def sweep(self) -> int:
        """Delete the loose entries that a pack holds (run by the driver at the end of a run, when no worker
        reads them any more). Returns how many were deleted. The packed copy was checked when it was written
        (fsynced, renamed into place); here only its place and size are compared with the loose file's, so
        the driver reads indexes, not replies."""
        if self.root is None or not (self.root / PACKS).is_dir():
            return 0
        removed = 0
        for path in sorted((self.root / PACKS).glob("shard-*.pack")):
            index = self._pack_index(path.name)
            size = path.stat().st_size if index else 0
            for key, (offset, length) in index.items():
                loose = self.root / key[:2] / f"{key}.entry"
                try:
                    same = loose.stat().st_size == int(length) and int(offset) + int(length) <= size
                except OSError:
                    continue
                if same:
                    loose.unlink(missing_ok=True)
                    removed += 1
        for folder in self.root.glob("??"):  # empty fan-out folders left by the sweep
            with contextlib.suppress(OSError):
                folder.rmdir()
        return removed

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
            blob = self._packed_blob(key)
            entry = self._decode(blob) if blob is not None else None
            if entry is not None:
                self.hits += 1
                return entry
            self.misses += 1
            if blob is not None:  # left in its pack: the shard's next pack leaves it out
                self.corrupt += 1
                log.warning("cache entry %s in %s is corrupt; the call will be made again", key,
                            self.locate(key)[0] if self.locate(key) else PACKS)
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
            blob = self._packed_blob(key)
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
