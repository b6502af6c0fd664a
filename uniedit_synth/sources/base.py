"""The source contract: a deterministic, streaming iterator of VQARecords, and how a source class is found.

A source class (built in, or a plugin named `package.module:Class` in `source.type`) says which specs it
opens (`opens`), opens one (`open`), and says where the relative image paths of its records live without
opening it (`image_root_of`: workers resolve images against it). sources/registry.py finds the class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.records import VQARecord

if TYPE_CHECKING:
    from ..core.config import SourceSpec


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

    # -- the class's side: which specs, opening one, where its images live ---------------------------------
    @classmethod
    def opens(cls, spec: str) -> bool:
        """Whether this class reads the `source.spec` string `spec` when `source.type` names no class (the
        registry asks its classes in order; the first that says yes opens it). Cheap: no data is read."""
        return False

    @classmethod
    def open(cls, spec: SourceSpec, *, seed: int, limit: int | None, subject_key: str | None) -> Source:
        """The source `spec` describes, before the run's order (caps, shuffle, limit) is applied to it.
        Raise SourceError (core/errors.py) with a message that says what to fix for anything unreadable."""
        raise NotImplementedError(f"{cls.__name__} does not say how to open a spec (classmethod `open`)")

    @classmethod
    def image_root_of(cls, spec: SourceSpec) -> Path | None:
        """The directory relative image paths of this source's records resolve against, computed without
        opening it (workers have only the config): `source.image_root` when set, else the spec's folder (or
        the folder of the file it names). None: records carry their images."""
        if spec.image_root:
            return Path(spec.image_root).expanduser().resolve()
        path = Path((spec.spec or "").strip()).expanduser()
        return (path if path.is_dir() else path.parent).resolve()

    @classmethod
    def raw_rows(cls, path: Path, options: Mapping[str, Any] | None = None) -> Iterator[Mapping[str, Any]]:
        """The rows of a file this class opens as plain mappings, before any column mapping (the benchmark
        reader uses them: a benchmark file has instructions, not question / answer pairs). A row that cannot
        be parsed raises SourceError."""
        raise NotImplementedError(f"{cls.__name__} has no rows of plain mappings")
