"""The deterministic order of a source: per-subject reservoir caps, seeded shuffling and the limit prefix.

Positional sources (records addressable by position) are arranged by permuting positions, so no record
is held in memory; other sources get a two-pass reservoir and a bounded shuffle buffer. Every random
choice comes from a fixed integer mixer (splitmix64), not from a library RNG, so the order is the same
on every run, machine and library version — resume depends on it.
"""

from __future__ import annotations

import heapq
import itertools
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import SourceError
from ..core.records import VQARecord
from .base import Source

_MASK64 = (1 << 64) - 1
_SALT_SHUFFLE = 0x5348_5546_464C_4531  # "SHUFFLE1"
_SALT_CAPS = 0x4341_5053_5245_5331  # "CAPSRES1"
_SALT_BUFFER = 0x4255_4646_4552_5331  # "BUFFERS1"
_SALT_BLOCKS = 0x424C_4F43_4B53_5331  # "BLOCKSS1"
_CHUNK = 4096


def mix64(value: int) -> int:
    """splitmix64's finaliser: a fixed bijection on 64-bit integers with good avalanche."""
    x = (value + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _mix64_array(values: np.ndarray) -> np.ndarray:
    x = values.astype(np.uint64, copy=True)
    x += np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def stream_key(seed: int, salt: int, extra: int = 0) -> int:
    return mix64(mix64(mix64(seed & _MASK64) ^ salt) ^ (extra & _MASK64))


def priorities(count: int, seed: int, salt: int, extra: int = 0) -> np.ndarray:
    """One distinct pseudo-random uint64 per position 0..count-1 (a bijection, so there are no ties)."""
    return _mix64_array(np.arange(count, dtype=np.uint64) ^ np.uint64(stream_key(seed, salt, extra)))


def permutation(count: int, seed: int, salt: int = _SALT_SHUFFLE, extra: int = 0) -> np.ndarray:
    """A seeded permutation of range(count), identical on every platform and numpy version."""
    return np.argsort(priorities(count, seed, salt, extra), kind="stable").astype(np.int64)


class PositionalSource(Source):
    """A source whose rows have stable positions 0..len-1 and can be read in any order of positions.

    One position may yield several records (a LLaVA conversation yields one per turn); caps count
    positions, the limit counts records.
    """

    #: directory that relative image paths are resolved against (validate_record's `image_root`)
    image_root: Path | None = None
    #: tag every record with its position (`meta["_pos"]`, `meta["_turn"]`: the n-th record of that position), so
    #: that a worker can read the same record again by position (engine: the driver is not the data path)
    tag_positions: bool = False
    #: read every column but the images (set by `lighten`): the driver's records then carry ids and text only
    light: bool = False

    def lighten(self) -> str | None:
        """Read ids and text only from now on, tagged with their positions, so that workers read the images
        themselves (`hydrate`). None when done; otherwise why this source's rows must pass whole through the
        driver. Sources that can leave their image column out override this."""
        return "this source has no image column to leave out"

    def _tagged(self, records: list[VQARecord], position: int) -> list[VQARecord]:
        if self.tag_positions or self.light:
            for turn, record in enumerate(records):
                record.meta["_pos"] = position
                record.meta["_turn"] = turn
        return records

    def hydrate(self, records: list[VQARecord]) -> list[VQARecord]:
        """The full records (images included) of records a light read tagged with positions, read here by
        position; records without a tag are returned as they are. The id the driver saw is kept: it is the
        shard's identity (a row that maps to another id when read whole, e.g. one that fails to map, keeps it)."""
        wanted = list(dict.fromkeys(int(r.meta["_pos"]) for r in records if "_pos" in r.meta))
        if not wanted:
            return records
        saved = (self.tag_positions, self.light)
        self.tag_positions, self.light = True, False
        try:
            full: dict[tuple[int, int], VQARecord] = {}
            for record in self.records_at(wanted):
                full[(int(record.meta["_pos"]), int(record.meta["_turn"]))] = record
        finally:
            self.tag_positions, self.light = saved
        out: list[VQARecord] = []
        for record in records:
            if "_pos" not in record.meta:
                out.append(record)
                continue
            key = (int(record.meta["_pos"]), int(record.meta["_turn"]))
            whole = full.get(key)
            if whole is None:  # the source changed between the driver's read and this one
                whole = record.model_copy(update={"invalid": "the source row changed while the run read it"})
            whole = whole.model_copy(update={"id": record.id, "duplicate": record.duplicate})
            whole.meta = {k: v for k, v in whole.meta.items() if k not in ("_pos", "_turn")}
            out.append(whole)
        return out

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def records_at(self, positions: Iterable[int]) -> Iterator[VQARecord]:
        """Records of the given positions, in that order."""

    def __iter__(self) -> Iterator[VQARecord]:
        return self.records_at(range(len(self)))

    def shuffled_positions(self, seed: int) -> np.ndarray:
        """All positions in shuffled order; sources with costly random access override this."""
        return permutation(len(self), seed)

    def subjects(self, key: str) -> Sequence[Any]:
        """The subject value of every position (None when absent). The default reads every record;
        sources that can read one column cheaply override it."""
        values: list[Any] = [None] * len(self)
        for position in range(len(self)):
            for record in self.records_at([position]):
                values[position] = subject_of(record, key)
                break
        return values


def block_shuffled_positions(block_sizes: Sequence[int], seed: int) -> np.ndarray:
    """Shuffle blocks (parquet row groups), then rows within each block: each block is read once."""
    starts = np.concatenate([[0], np.cumsum(block_sizes, dtype=np.int64)])
    parts = []
    for block in permutation(len(block_sizes), seed, _SALT_BLOCKS).tolist():
        size = int(block_sizes[block])
        parts.append(starts[block] + permutation(size, seed, _SALT_BLOCKS, extra=block + 1))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def subject_of(record: VQARecord, key: str) -> Any:
    """A record's subject for caps: `meta[key]`, else the record field of that name (e.g. `category`)."""
    if key in record.meta:
        return record.meta[key]
    return getattr(record, key, None) if key in VQARecord.model_fields else None


def _subject_name(value: Any) -> str:
    return "" if value is None else str(value)


def _cap_for(subject: str, caps: dict[str, int]) -> int | None:
    if subject in caps:
        return caps[subject]
    return caps.get("*")


def capped_mask(subjects: Sequence[Any], caps: dict[str, int], seed: int) -> np.ndarray:
    """Which positions survive per-subject caps: for each capped subject, the `cap` positions with the
    smallest seeded priority — a uniform sample without replacement, independent of iteration order."""
    count = len(subjects)
    keep = np.ones(count, dtype=bool)
    if count == 0:
        return keep
    codes_by_name: dict[str, int] = {}
    codes = np.fromiter(
        (codes_by_name.setdefault(_subject_name(s), len(codes_by_name)) for s in subjects),
        dtype=np.int64,
        count=count,
    )
    limits = np.full(len(codes_by_name), count, dtype=np.int64)
    for name, code in codes_by_name.items():
        cap = _cap_for(name, caps)
        if cap is not None:
            limits[code] = cap
    order = np.lexsort((priorities(count, seed, _SALT_CAPS), codes))
    sorted_codes = codes[order]
    group_start = np.r_[0, np.flatnonzero(np.diff(sorted_codes)) + 1]
    sizes = np.diff(np.r_[group_start, count])
    rank = np.arange(count) - np.repeat(group_start, sizes)
    keep[order] = rank < limits[sorted_codes]
    return keep


def _iter_positions(positions: np.ndarray) -> Iterator[int]:
    for start in range(0, len(positions), _CHUNK):
        yield from positions[start : start + _CHUNK].tolist()


class ArrangedSource(Source):
    """Caps, then shuffle, then limit, around any source. The kept set does not depend on the limit and
    the order does not depend on the limit, so a bigger limit only appends records."""

    def __init__(
        self,
        inner: Source,
        *,
        seed: int,
        limit: int | None = None,
        shuffle: bool = False,
        subject_key: str | None = None,
        subject_caps: dict[str, int] | None = None,
        shuffle_buffer: int = 1000,
    ) -> None:
        caps = dict(subject_caps or {})
        bad = {name: cap for name, cap in caps.items() if not isinstance(cap, int) or cap < 0}
        if bad:
            raise SourceError(f"source.subject_caps must be non-negative integers; got {bad}")
        if caps and not subject_key:
            raise SourceError(
                "source.subject_caps needs source.subject_key (the column or meta key to cap by)"
            )
        if limit is not None and limit < 0:
            raise SourceError(f"limit must be >= 0, got {limit}")
        self.inner = inner
        self.seed = seed
        self.limit = limit
        self.shuffle = shuffle
        self.subject_key = subject_key
        self.subject_caps = caps
        self.shuffle_buffer = max(1, int(shuffle_buffer))
        self.label = inner.label

    @property
    def image_root(self) -> Path | None:
        return getattr(self.inner, "image_root", None)

    def lighten(self) -> str | None:
        """PositionalSource.lighten of the source inside (a source without random access keeps whole rows)."""
        lighten = getattr(self.inner, "lighten", None)
        if not callable(lighten):
            return ("a stream or a plugin's source (no reading by position): rows pass through the driver, a "
                    "shard at a time")
        if self.subject_caps and not isinstance(self.inner, PositionalSource):
            return "subject caps on a source without positions read whole rows (twice)"
        return lighten()

    def hydrate(self, records: list[VQARecord]) -> list[VQARecord]:
        hydrate = getattr(self.inner, "hydrate", None)
        return hydrate(records) if callable(hydrate) else records

    def __iter__(self) -> Iterator[VQARecord]:
        records = self._arranged()
        if self.limit is not None:
            records = itertools.islice(records, self.limit)
        return records

    def _arranged(self) -> Iterator[VQARecord]:
        inner = self.inner
        if not self.shuffle and not self.subject_caps:
            return iter(inner)
        if isinstance(inner, PositionalSource):
            return self._arranged_positional(inner)
        records: Iterator[VQARecord] = iter(inner)
        if self.subject_caps:
            records = self._reservoir_two_pass(inner)
        if self.shuffle:
            records = buffer_shuffle(records, self.seed, self.shuffle_buffer)
        return records

    def _arranged_positional(self, inner: PositionalSource) -> Iterator[VQARecord]:
        if self.shuffle:
            order = inner.shuffled_positions(self.seed)
        else:
            order = np.arange(len(inner), dtype=np.int64)
        if self.subject_caps:
            assert self.subject_key is not None
            keep = capped_mask(inner.subjects(self.subject_key), self.subject_caps, self.seed)
            order = order[keep[order]]
        return inner.records_at(_iter_positions(order))

    def _reservoir_two_pass(self, inner: Source) -> Iterator[VQARecord]:
        """Pass 1 keeps, per capped subject, the positions with the smallest priorities (memory: the caps);
        pass 2 re-reads the deterministic source and yields the kept records in their original order."""
        assert self.subject_key is not None
        key = stream_key(self.seed, _SALT_CAPS)
        heaps: dict[str, list[tuple[int, int]]] = {}
        for position, record in enumerate(inner):
            name = _subject_name(subject_of(record, self.subject_key))
            cap = _cap_for(name, self.subject_caps)
            if cap is None:
                continue
            heap = heaps.setdefault(name, [])
            item = (-mix64(position ^ key), position)
            if len(heap) < cap:
                heapq.heappush(heap, item)
            elif cap and item > heap[0]:
                heapq.heapreplace(heap, item)
        kept = {position for heap in heaps.values() for _, position in heap}
        for position, record in enumerate(inner):
            name = _subject_name(subject_of(record, self.subject_key))
            if _cap_for(name, self.subject_caps) is None or position in kept:
                yield record

    def estimated_len(self) -> int | None:
        base = None if self.subject_caps else self.inner.estimated_len()
        if base is None:
            return self.limit if not self.subject_caps else None
        return base if self.limit is None else min(base, self.limit)

def buffer_shuffle(records: Iterable[VQARecord], seed: int, size: int) -> Iterator[VQARecord]:
    """A seeded shuffle through a bounded buffer (for sources without random access)."""
    key = stream_key(seed, _SALT_BUFFER)
    buffer: list[VQARecord] = []
    draws = 0
    for record in records:
        if len(buffer) < size:
            buffer.append(record)
            continue
        slot = mix64(draws ^ key) % size
        draws += 1
        yield buffer[slot]
        buffer[slot] = record
    for index in permutation(len(buffer), seed, _SALT_BUFFER, extra=draws + 1).tolist():
        yield buffer[index]
