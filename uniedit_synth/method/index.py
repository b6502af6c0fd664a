"""Lookups without all-pairs comparison: multi-index hashing for Hamming distance, MinHash LSH for text.

`HammingIndex` splits a 64-bit hash into `max_distance + 1` chunks; by the pigeonhole principle two hashes
within `max_distance` bits agree exactly on at least one chunk, so a lookup reads only the buckets of its own
chunk values and checks the full distance there. `near_duplicate_pairs` does the same for a whole array at
once (sorting instead of dicts), which is how `uniedit audit` groups 100k source images in memory of a few
bytes per row. `TextIndex` wraps datasketch's MinHash LSH and verifies every candidate by exact Jaccard.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

import numpy as np

from .fingerprint import jaccard

T = TypeVar("T")
NUM_PERM = 64


def chunk_bounds(max_distance: int, bits: int = 64) -> list[tuple[int, int]]:
    """(shift, width) of each of the max_distance + 1 chunks covering `bits` bits."""
    parts = max_distance + 1
    widths = [bits // parts + (1 if i < bits % parts else 0) for i in range(parts)]
    out, shift = [], bits
    for width in widths:
        shift -= width
        out.append((shift, width))
    return out


class HammingIndex(Generic[T]):
    """64-bit hashes → items; `near(h)` yields (item, distance) for every stored hash within max_distance.

    `namespace` partitions the index (e.g. by normalised question: the same image under the same question).
    """

    def __init__(self, max_distance: int):
        if not 0 <= max_distance <= 16:
            raise ValueError("max_distance must be between 0 and 16 bits")
        self.max_distance = max_distance
        self._chunks = chunk_bounds(max_distance)
        self._tables: list[dict[tuple[int, int], list[int]]] = [{} for _ in self._chunks]
        self._hashes = array("Q")  # 8 bytes a hash, not a Python int each
        self._items: list[T] = []

    def __len__(self) -> int:
        return len(self._items)

    def add(self, hash_: int, item: T, namespace: int = 0) -> None:
        slot = len(self._items)
        self._hashes.append(hash_)
        self._items.append(item)
        for table, (shift, width) in zip(self._tables, self._chunks, strict=True):
            table.setdefault((namespace, (hash_ >> shift) & ((1 << width) - 1)), []).append(slot)

    def near(self, hash_: int, namespace: int = 0) -> Iterator[tuple[T, int]]:
        seen: set[int] = set()
        for table, (shift, width) in zip(self._tables, self._chunks, strict=True):
            for slot in table.get((namespace, (hash_ >> shift) & ((1 << width) - 1)), ()):
                if slot in seen:
                    continue
                seen.add(slot)
                distance = (self._hashes[slot] ^ hash_).bit_count()
                if distance <= self.max_distance:
                    yield self._items[slot], distance


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """All index pairs (i < j) of a uint64 array whose Hamming distance is <= max_distance, as an (n, 2) array.

    Per chunk: sort by chunk value, pair up rows within each run of equal values, keep pairs within the
    distance. Memory is O(rows + candidate pairs).
    """
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    found: list[np.ndarray] = []
    for shift, width in chunk_bounds(max_distance):
        keys = (hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for start, end in zip(starts[ends - starts > 1], ends[ends - starts > 1], strict=True):
            members = np.sort(order[start:end])
            left, right = np.triu_indices(len(members), k=1)
            pairs = np.stack([members[left], members[right]], axis=1)
            distance = np.bitwise_count(hashes[pairs[:, 0]] ^ hashes[pairs[:, 1]])
            found.append(pairs[distance <= max_distance])
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found), axis=0)


_PERMUTATIONS: dict[int, tuple[object, str]] = {}


def minhash(tokens: Iterable[str], num_perm: int = NUM_PERM):  # -> datasketch.MinHash
    from datasketch import MinHash  # imported on use: a dedup-only synth run never needs it

    if num_perm not in _PERMUTATIONS:  # drawing them is most of a MinHash's cost: once per process
        first = MinHash(num_perm=num_perm)
        _PERMUTATIONS[num_perm] = (first.permutations, first.scheme)
    permutations, scheme = _PERMUTATIONS[num_perm]
    signature = MinHash(num_perm=num_perm, permutations=permutations, scheme=scheme)
    signature.update_batch([t.encode() for t in tokens])
    return signature


class TextIndex:
    """Shingle sets under a key; `matches(shingles)` returns keys whose exact Jaccard >= threshold.

    Candidates come from MinHash LSH (datasketch), then every candidate is verified exactly, so the result has
    no LSH false positives (LSH may miss a pair just above the threshold, rarely)."""

    def __init__(self, threshold: float = 0.8, num_perm: int = NUM_PERM):
        from datasketch import MinHashLSH

        self.threshold = threshold
        self.num_perm = num_perm
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._sets: dict[str, frozenset[str]] = {}

    def __len__(self) -> int:
        return len(self._sets)

    def add(self, key: str, shingle_set: set[str]) -> None:
        if not shingle_set or key in self._sets:
            return
        self._sets[key] = frozenset(shingle_set)
        self._lsh.insert(key, minhash(shingle_set, self.num_perm))

    def matches(self, shingle_set: set[str]) -> list[tuple[str, float]]:
        if not shingle_set or not self._sets:
            return []
        out = []
        for key in self._lsh.query(minhash(shingle_set, self.num_perm)):
            score = jaccard(set(shingle_set), set(self._sets[key]))
            if score >= self.threshold:
                out.append((key, round(score, 3)))
        return sorted(out, key=lambda kv: (-kv[1], kv[0]))
