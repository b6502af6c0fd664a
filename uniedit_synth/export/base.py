"""The export format contract: a writer class that names its format and carries its defaults and options.

`uniedit export` builds one writer per export (`create`), hands it every selected sample (`add`) and
preference pair (`add_pair`), then `finish`es it; the files go into a staging directory that replaces the
output directory only when complete (export/__init__.py). The built-in formats (uniedit-jsonl, hf, bagel) and
plugins (`--format package.module:Class`, export/registry.py) are such classes;
examples/plugins/csv_export.py is a small one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel

if TYPE_CHECKING:
    from ..core.records import Sample
    from .card import CardStats
    from .options import ExportOptions
    from .selection import PreferencePair


class ExportWriter:
    """Base of a format's writer. Class attributes say what the format is and takes; the instance writes."""

    #: the name `--format` takes (a plugin is named by its `package.module:Class` path instead)
    name: ClassVar[str] = ""
    #: rows per output file when `--shard-rows` is not given
    shard_rows: ClassVar[int] = 1_000
    #: rows per parquet row group (0: the format writes no parquet)
    row_group_rows: ClassVar[int] = 0
    #: writes preference pairs (`--include-rejects`); carries edit masks (`--with-masks`); `--push-to-hub`
    pairs: ClassVar[bool] = True
    masks: ClassVar[bool] = True
    hub: ClassVar[bool] = False
    #: the format-only ExportOptions fields it reads (`layout`, `with_reasoning`, `bagel_*`)
    reads: ClassVar[frozenset[str]] = frozenset()
    #: its own options (`--format-option KEY=VALUE`), validated by this model; None: it takes none
    Options: ClassVar[type[BaseModel] | None] = None

    def __init__(self, root: Path, final_dir: Path, options: ExportOptions, run_info: dict[str, Any]) -> None:
        self.root = root
        self.final_dir = final_dir
        self.options = options
        self.run_info = run_info

    @classmethod
    def create(cls, root: Path, final_dir: Path, options: ExportOptions, run_info: dict[str, Any]) -> ExportWriter:
        """The writer of one export into `root` (the staging dir; `final_dir` is where it will end up)."""
        return cls(root, final_dir, options, run_info)

    @classmethod
    def check(cls, options: ExportOptions) -> None:
        """Refuse option combinations this format cannot write (raise ExportError saying what to change)."""

    def add(self, sample: Sample, split: str, masked: tuple[np.ndarray, float] | None) -> None:
        raise NotImplementedError

    def add_pair(self, pair: PreferencePair, split: str) -> None:
        raise NotImplementedError(f"the {self.name} format has no preference pairs")

    def finish(self, stats: CardStats) -> list[Path]:
        """Close every file; the paths written (the summary lists them relative to the export)."""
        raise NotImplementedError
