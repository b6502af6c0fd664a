"""The response cache: every backend reply stored under `<out>/cache/`, keyed by sha256 of its full request.

One file per entry (`cache/ab/abcdef….entry`), written to a temp name and renamed (on object storage: one
upload, visible only once complete; runfs.py), so readers never see a half-written entry and any number of
worker processes can share the directory. An entry is a JSON header line followed by a binary payload (an
edited image); the header holds the payload's length and sha256, so a torn or truncated entry is detected,
dropped with a warning and treated as a miss.

Packs keep a big run's directory small: once a shard is final, the worker copies the entries its calls used
into one file, `cache/packs/shard-NNNNN.pack` (format: run/packs.py; it also holds the shard's call index),
and the loose copies are deleted at the end of the run, when no call can be reading them (`sweep`: by the Ray
workers, a share of the packs each, or by the driver). A packed entry is found by its request key like a loose
one, by every later run, whatever its config: a pack is read at a process's first miss. Local run directories
only.

An image is stored once: a packed reply whose payload (an edited image) is also a cell of the shard's own
parquet files holds a reference instead of the bytes, `_payload_ref: [file, row, column]` (the file relative to
the run) next to the payload's length and sha256, which are checked when it is read back. Those files are then
the only copy, so whatever removes or rewrites a shard's files first puts the bytes back into its pack
(`materialize`): a redone shard (the worker, before it writes), a config change (run/store.py check_config,
before it deletes the shards) and a withdrawn shard (the driver). A reference that no longer resolves (a shard
file deleted by hand) is a miss, never a wrong reply.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.digests import image_digest
from . import packs
from .fs import RunFS, as_run_fs

log = logging.getLogger(__name__)


@dataclass
class CacheEntry:
    meta: dict[str, Any]
    payload: bytes = b""


PACKS = "packs"
#: payloads smaller than this stay in the pack (a reference would save nothing)
MIN_REF_BYTES = 1024
#: the parquet columns a reply's payload can be found in (the edited image of a sample or of a failed attempt)
REF_COLUMNS = ("edited_image",)


#: written into a cache folder created empty by a version whose keys leave `context` out for backends that do
#: not read it (backends/base.py request_key): no entry under an older key can be in it, so a miss there is
#: not looked up again under the older key (engine/calls.py `_legacy_hit`: a second key and a second read)
KEYS_MARKER = "keys-v2"


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
        #: key -> (pack file name, slot); read at the first miss of a loose entry
        self._packed: dict[str, tuple[str, packs.Slot]] | None = None
        #: pack name -> (size, mtime) when its index was read: a pack rewritten since is read again
        self._stamps: dict[str, tuple[int, int]] = {}
        #: the inflated block last read: (pack name, size, mtime) and its bytes
        self._block: tuple[tuple[str, int, int], bytes] | None = None
        #: the last parquet row group a reference was read from: (file, size, mtime, group) -> its cells
        self._group: tuple[tuple[Any, ...], dict[str, list[bytes | None]]] | None = None
        #: whether entries under the keys of before `context` left them can be here (None: not looked yet)
        self._legacy: bool | None = None

    # -- which keys the entries use ------------------------------------------------------------------------
    @property
    def legacy_keys(self) -> bool:
        """Whether this cache can hold entries written under the old keys (context included for every
        backend): True unless its folder carries the marker `mark_new` writes into a cache created empty."""
        if self._legacy is None:
            self._legacy = not self.fs.exists(KEYS_MARKER)
        return self._legacy

    def mark_new(self) -> bool:
        """Write the marker when the cache holds no entry yet (no fan-out folder, no pack): a new run's cache.
        A cache with entries keeps looking misses up under the old keys too. Local caches only (a remote one
        cannot list its folders cheaply; it keeps the second lookup). Returns whether the marker is there."""
        if self.root is None:
            return False
        marker = self.root / KEYS_MARKER
        if marker.is_file():
            return True
        try:
            children = list(self.root.iterdir())
        except FileNotFoundError:
            children = []
        if any(len(p.name) == 2 or p.name == PACKS for p in children):
            return False
        self.fs.write_bytes(KEYS_MARKER, b"request keys without context for backends that do not read it\n",
                            fsync=True, what=f"the response cache ({self.fs.display})")
        self._legacy = False
        return True

    # -- packs ---------------------------------------------------------------------------------------------
    def _pack_path(self, name: str) -> Path:
        assert self.root is not None
        return self.root / PACKS / name

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int] | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        return stat.st_size, stat.st_mtime_ns

    def _index(self, name: str) -> packs.PackIndex | None:
        path = self._pack_path(name)
        stamp = self._stamp(path)
        index = packs.read_index(path)
        if stamp is not None and index is not None:
            self._stamps[name] = stamp
        return index

    def _load_packs(self) -> dict[str, tuple[str, packs.Slot]]:
        if self._packed is None:
            self._packed = {}
            folder = self.root / PACKS if self.root is not None else None
            if folder is not None and folder.is_dir():
                for path in sorted(folder.glob("shard-*.pack")):
                    index = self._index(path.name)
                    for key, slot in (index.entries if index else {}).items():
                        self._packed[key] = (path.name, slot)
        return self._packed

    def _read_slot(self, name: str, slot: packs.Slot) -> bytes | None:
        path = self._pack_path(name)
        if not slot.in_block:
            return packs.read_large(path, slot)
        stamp = self._stamp(path)
        if stamp is None:
            return None
        tag = (name, *stamp)
        if self._block is None or self._block[0] != tag:
            index = packs.read_index(path)
            block = packs.read_block(path, index) if index is not None else None
            if block is None:
                return None
            self._block = (tag, block)
        return self._block[1][slot.offset: slot.offset + slot.length]

    def _packed_blob(self, key: str) -> bytes | None:
        if self.root is None:
            return None
        where = self._load_packs().get(key)
        if where is None:
            return None
        name, slot = where
        if self._stamp(self._pack_path(name)) != self._stamps.get(name):
            # the pack was rewritten (its shard redone) since its index was read: read the index again
            index = self._index(name)
            fresh = index.entries.get(key) if index is not None else None
            if fresh is None:
                return None
            slot = fresh
            self._load_packs()[key] = (name, slot)
        return self._read_slot(name, slot)

    def packed_keys(self) -> list[str]:
        """The keys held in packs (sorted), for a scan of the whole cache."""
        return sorted(self._load_packs()) if self.root is not None else []

    def locate(self, key: str) -> tuple[Path, int, int] | None:
        """Where a packed entry is: (pack file, offset, length; in its inflated block when the entry is small);
        None when it is not packed."""
        where = self._load_packs().get(key) if self.root is not None else None
        return None if where is None else (self._pack_path(where[0]), where[1].offset, where[1].length)

    def pack_calls(self, shard: int) -> bytes | None:
        """The call index lines a shard's pack holds (None: no pack, or none in it)."""
        if self.root is None:
            return None
        path = self._pack_path(pack_name(shard))
        index = packs.read_index(path)
        if index is None or index.calls is None:
            return None
        block = packs.read_block(path, index)
        return None if block is None else packs.calls_of(index, block)

    def _pack_blobs(self, name: str) -> tuple[dict[str, bytes], int, bytes] | None:
        """Every entry of a pack as stored, how many are references, and its call index; None: unreadable."""
        path = self._pack_path(name)
        index = packs.read_index(path)
        block = packs.read_block(path, index) if index is not None else None
        if index is None or block is None:
            return None
        blobs: dict[str, bytes] = {}
        refs = 0
        for key, slot in index.entries.items():
            blob = packs.read_entry(path, slot, block)
            parts = _split(blob or b"")
            if parts is not None:
                blobs[key] = blob or b""
                refs += "_payload_ref" in parts[0]
        return blobs, refs, packs.calls_of(index, block)

    # -- references into the shard's parquet -----------------------------------------------------------------
    def _cell(self, ref: list[Any]) -> bytes | None:
        """The bytes of a reference `[file, row, column]`, read from the run's parquet (None: not there)."""
        import pyarrow.parquet as pq

        assert self.root is not None
        try:
            rel, row, column = str(ref[0]), int(ref[1]), str(ref[2])
            path = self.root.parent / rel
            stat = path.stat()
            with pq.ParquetFile(path) as parquet:
                start = 0
                for group in range(parquet.metadata.num_row_groups):
                    rows = parquet.metadata.row_group(group).num_rows
                    if row < start + rows:
                        break
                    start += rows
                else:
                    return None
                tag = (rel, stat.st_size, stat.st_mtime_ns, group)
                if self._group is None or self._group[0] != tag:
                    table = parquet.read_row_group(group, columns=list(REF_COLUMNS))
                    cells = {name: [(v or {}).get("bytes") for v in table.column(name).to_pylist()]
                             for name in REF_COLUMNS}
                    self._group = (tag, cells)
            return self._group[1][column][row - start]
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return None

    def _resolve(self, blob: bytes) -> bytes | None:
        """A packed blob as a whole entry (a reference replaced by the bytes it names); None when the bytes are
        not where it says (or differ from the recorded sha256: the entry is then a miss)."""
        parts = _split(blob)
        if parts is None:
            return None
        header, payload = parts
        ref = header.get("_payload_ref")
        if ref is None:
            return blob
        if self.root is None or payload:
            return None
        cell = self._cell(ref)
        if cell is None or len(cell) != header.get("_payload_len") or \
                hashlib.sha256(cell).hexdigest() != header.get("_payload_sha256"):
            return None
        del header["_payload_ref"]
        return json.dumps(header, sort_keys=True, ensure_ascii=False).encode() + b"\n" + cell

    def _shard_cells(self, files: Iterable[str]) -> dict[str, list[Any]]:
        """sha256 → [file, row, column] of every image cell of the shard's parquet files (run-relative)."""
        import pyarrow.parquet as pq

        assert self.root is not None
        cells: dict[str, list[Any]] = {}
        for rel in files:
            try:
                table = pq.read_table(self.root.parent / rel, columns=list(REF_COLUMNS))
            except (OSError, ValueError, KeyError):
                continue
            for column in REF_COLUMNS:
                for row, value in enumerate(table.column(column).to_pylist()):
                    data = (value or {}).get("bytes")
                    if data and len(data) >= MIN_REF_BYTES:
                        cells.setdefault(hashlib.sha256(data).hexdigest(), [rel, row, column])
        return cells

    def pack(self, shard: int, keys: Iterable[str], shard_files: Iterable[str] = (), calls: bytes = b"") -> int:
        """Copy the entries of `keys` (a final shard's calls) into the shard's pack, with those of an earlier
        pack of the same shard (a redone shard keeps every reply it ever had), and the shard's call index
        `calls`. A payload that is also an image cell of `shard_files` (the shard's parquet, run-relative) is
        stored as a reference to it. Returns entries packed."""
        if self.root is None:
            return 0
        entries: dict[str, bytes] = {}
        name = pack_name(shard)
        earlier = self._pack_blobs(name) if self._pack_path(name).exists() else None
        for key, blob in (earlier[0] if earlier else {}).items():
            whole = self._resolve(blob)
            if whole is not None:
                entries[key] = whole
        for key in dict.fromkeys(keys):
            if not key or key in entries:
                continue
            blob = self.fs.read_bytes(self.rel_path(key))
            if blob is not None and self._decode(blob) is not None:
                entries[key] = blob
        if not entries and not calls:
            return 0
        wanted = any(len(blob) > MIN_REF_BYTES for blob in entries.values())
        cells = self._shard_cells(shard_files) if wanted else {}
        stored = {key: (_as_reference(blob, cells) if cells else blob, len(blob)) for key, blob in entries.items()}
        self._write_pack(name, packs.build(stored, calls))
        return len(entries)

    def _write_pack(self, name: str, data: bytes) -> None:
        self.fs.write_bytes(f"{PACKS}/{name}", data, fsync=True, what=f"the response cache ({self.fs.display})")

    def materialize(self, shard: int | None = None) -> int:
        """Put the bytes back into the pack of `shard` (every pack: None) where it references the shard's parquet,
        before those files are rewritten or deleted. A reference that does not resolve any more is dropped (a
        miss). Returns the references replaced."""
        if self.root is None or not (self.root / PACKS).is_dir():
            return 0
        names = [pack_name(shard)] if shard is not None else self.pack_names()
        replaced = 0
        for name in names:
            found = self._pack_blobs(name) if self._pack_path(name).exists() else None
            if found is None or not found[1]:
                continue
            blobs, refs, calls = found
            wholes = {key: self._resolve(blob) for key, blob in blobs.items()}
            self._write_pack(name, packs.build({k: (b, len(b)) for k, b in wholes.items() if b is not None}, calls))
            replaced += refs
        return replaced

    def pack_names(self) -> list[str]:
        """The packs on disk (`shard-00001.pack`, …), sorted."""
        if self.root is None or not (self.root / PACKS).is_dir():
            return []
        return sorted(p.name for p in (self.root / PACKS).glob("shard-*.pack"))

    def sweep(self, names: Iterable[str] | None = None, prune: bool = True) -> int:
        """Delete the loose entries that the packs `names` (None: every pack) hold, at the end of a run, when
        no worker reads them any more; the engine spreads the packs over its workers (about 2.4 entries a
        record, most of a driver's CPU per record otherwise). `prune` then removes the empty fan-out folders.
        Returns how many were deleted. The packed copy was checked when it was written (fsynced, renamed
        into place); here only the loose entry's size is compared with what the pack recorded of it, so the
        sweep reads indexes, not replies."""
        if self.root is None or not (self.root / PACKS).is_dir():
            return 0
        removed = 0
        root = str(self.root)  # plain strings and os calls: ~2.4 entries a record, pathlib was half the cost
        for path in [self._pack_path(n) for n in (self.pack_names() if names is None else names)]:
            if not path.exists():
                continue
            index = packs.read_index(path)
            size = path.stat().st_size if index else 0
            for key, slot in (index.entries if index else {}).items():
                loose = f"{root}/{self.rel_path(key)}"
                inside = slot.in_block or slot.offset + slot.length <= size
                try:
                    same = os.stat(loose).st_size == slot.whole and inside
                except OSError:
                    continue
                if same:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(loose)
                    removed += 1
        for folder in self.root.glob("??") if prune else ():  # empty fan-out folders left by the sweep
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
            whole = self._resolve(blob) if blob is not None else None
            entry = self._decode(whole) if whole is not None else None
            if entry is not None:
                self.hits += 1
                return entry
            self.misses += 1
            if blob is not None:  # left in its pack: the shard's next pack leaves it out
                self.corrupt += 1
                log.warning("cache entry %s in %s is corrupt (or the shard file holding its image changed); the "
                            "call will be made again", key, self.locate(key)[0] if self.locate(key) else PACKS)
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
            if blob is not None:
                whole = self._resolve(blob)
                return (self._decode(whole) if whole is not None else None), True
        if blob is None:
            return None, False
        return self._decode(blob), True

    def put(self, key: str, meta: dict[str, Any], payload: bytes = b"") -> None:
        header = dict(meta)
        header["_payload_len"] = len(payload)
        header["_payload_sha256"] = image_digest(payload)  # an edited image: its judge call's key hashes it too
        line = json.dumps(header, sort_keys=True, ensure_ascii=False).encode() + b"\n"
        self.fs.write_bytes(self.rel_path(key), line + payload, what=f"the response cache ({self.fs.display})")

    @staticmethod
    def _decode(blob: bytes) -> CacheEntry | None:
        split = _split(blob)
        if split is None:
            return None
        header, payload = split
        if header.pop("_payload_len", None) != len(payload):
            return None
        if header.pop("_payload_sha256", None) != image_digest(payload):  # a hit's image goes on to its judge call
            return None
        return CacheEntry(meta=header, payload=payload)

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "corrupt": self.corrupt}


def _split(blob: bytes) -> tuple[dict[str, Any], bytes] | None:
    """An entry's header (as stored, `_payload_*` fields included) and payload; None when it is not an entry."""
    newline = blob.find(b"\n")
    if newline < 0:
        return None
    try:
        header = json.loads(blob[:newline])
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return (header, blob[newline + 1:]) if isinstance(header, dict) else None


def _as_reference(blob: bytes, cells: dict[str, list[Any]]) -> bytes:
    """A whole entry whose payload is one of `cells` (sha256 → [file, row, column]) as a reference to it."""
    parts = _split(blob)
    if parts is None or len(parts[1]) < MIN_REF_BYTES:
        return blob
    header, _ = parts
    ref = cells.get(str(header.get("_payload_sha256")))
    if ref is None:
        return blob
    header["_payload_ref"] = ref
    return json.dumps(header, sort_keys=True, ensure_ascii=False).encode() + b"\n"
