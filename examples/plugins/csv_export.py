"""An example export plugin: one CSV of the accepted samples, beside their source and edited images.

    uniedit export runs/demo --format examples.plugins.csv_export:CsvExport --out exports/demo-csv \
        --format-option delimiter=';'

The class follows export/base.py `ExportWriter`: class attributes carry the format's name, defaults and what
it can write (no preference pairs, no masks here), `Options` validates its own `--format-option`s, and the
instance writes one export: `add` per sample, `finish` at the end (into the staging directory `uniedit
export` swaps into place once everything is written).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from uniedit_synth.core.records import Sample
from uniedit_synth.export.base import ExportWriter
from uniedit_synth.export.card import CardStats
from uniedit_synth.export.files import safe_stem, write_image
from uniedit_synth.export.options import ExportOptions

COLUMNS = ("id", "split", "task_category", "original_question", "original_answer", "edit_instruction", "score",
           "source_image", "edited_image")


class CsvOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delimiter: str = Field(",", min_length=1, max_length=1)
    #: False: the CSV only, no image files
    images: bool = True


class CsvExport(ExportWriter):
    name = "csv"
    shard_rows = 1_000_000  # one file
    pairs = False
    masks = False
    Options = CsvOptions

    def __init__(self, root: Path, final_dir: Path, options: ExportOptions, run_info: dict[str, Any]) -> None:
        super().__init__(root, final_dir, options, run_info)
        self.settings = CsvOptions(**options.format_options)
        self.rows: list[dict[str, Any]] = []

    def add(self, sample: Sample, split: str, masked: tuple[np.ndarray, float] | None) -> None:
        stem = safe_stem(sample.id)  # ids may hold `/` or `..`: never a path of their own
        images = {"source_image": "", "edited_image": ""}
        if self.settings.images and sample.source_image and sample.edited_image:
            images = {"source_image": write_image(self.root, "images/source", stem, sample.source_image),
                      "edited_image": write_image(self.root, "images/edited", stem, sample.edited_image)}
        self.rows.append({"id": sample.id, "split": split, "task_category": sample.task_category,
                          "original_question": sample.original_question, "original_answer": sample.original_answer,
                          "edit_instruction": sample.edit_instruction, "score": sample.score, **images})

    def finish(self, stats: CardStats) -> list[Path]:
        path = self.root / "samples.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, COLUMNS, delimiter=self.settings.delimiter)
            writer.writeheader()
            writer.writerows(self.rows)
        return [path, *sorted(p for p in (self.root / "images").rglob("*") if p.is_file())]
