"""The source contract: a deterministic, streaming iterator of VQARecords."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

from ..core.records import VQARecord


class Source(ABC):
    """A VQA source. Iteration order is deterministic for a given spec, options and seed, so shards
    (consecutive runs of `shard_size` records) are the same on every run and resume works.

    Implementations stream: memory stays flat whatever the size of the source. A record that cannot be
    used (missing file, undecodable text) is still yielded, with `invalid` set to a short reason, so that
    `accepted + rejected == read` holds; image decoding and checks happen later, in the worker.
    """

    #: short label, the first part of every record id (`<label>/<key>`)
    label: str = "source"

    @abstractmethod
    def __iter__(self) -> Iterator[VQARecord]: ...

    def estimated_len(self) -> int | None:
        """Number of records, when cheap to know (for progress bars); None otherwise."""
        return None
