"""The `uniedit-jsonl` export: the Uni-Edit release layout (JSONL rows + image files + dataset card).

```
<out>/README.md                       dataset card (YAML front matter + counts and score histograms)
<out>/export.json                     ExportSummary of this export
<out>/data/train-00000.jsonl ...      `shard_rows` rows per file (validation-*.jsonl when val_fraction > 0)
<out>/images/source/<stem>.png        source image      (<stem> = files.safe_stem(id))
<out>/images/edited/<stem>.png        edited image
<out>/images/mask/<stem>.png          edit mask, with --with-masks (1-bit PNG, white = edited)
<out>/preference/train-00000.jsonl    chosen/rejected pairs, with include_rejects
<out>/images/rejected/<stem>-r0.png   rejected edits of the pairs
```

Each row has the Uni-Edit-148k keys ``task_category, original_question, original_answer, process_answer,
image_path, edit_instruction, output_image_path, analysis, score`` plus ``id`` and ``instruction_plan`` (the
plan the instruction follows; null for runs made before plans), ``chain_id``, ``turn`` and ``parent_id``
(multi-turn chains, docs/guides/chains.md; a single-turn row is turn 1 of its own chain) (and ``mask_path`` and
``edit_weight`` with masks). Image paths are relative to the export dir, which is what the Uni-Edit BAGEL fork's
``SftEditJSONLIterableDataset`` expects (``os.path.join(data_dir, row["image_path"])``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import yaml

from ..core.errors import ExportError
from ..core.records import Sample
from ..method.masks import mask_to_png
from .base import ExportWriter
from .card import CardStats, card_body
from .files import safe_stem, write_image
from .options import SPLITS, ExportOptions
from .selection import PreferencePair
from .uniedit_release import UniEditReleaseWriter, sample_row


class JsonlShards:
    """Rows in, `<dir>/<prefix>-00000.jsonl`, ... out, `shard_rows` rows per file."""

    def __init__(self, directory: Path, prefix: str, shard_rows: int) -> None:
        self.directory = directory
        self.prefix = prefix
        self.shard_rows = shard_rows
        self.files: list[Path] = []
        self._handle: TextIO | None = None
        self._rows_in_file = 0

    def write(self, row: dict[str, Any]) -> None:
        if self._handle is None or self._rows_in_file >= self.shard_rows:
            self.close()
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{self.prefix}-{len(self.files):05d}.jsonl"
            self.files.append(path)
            self._handle = path.open("w", encoding="utf-8")
            self._rows_in_file = 0
        self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._rows_in_file += 1

    def close(self) -> list[Path]:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        return list(self.files)


class UniEditJsonlWriter(ExportWriter):
    """Writes the uniedit-jsonl layout into `root` (see the module docstring); with `layout: release`, the
    release's own files (uniedit_release.py)."""

    name = "uniedit-jsonl"
    shard_rows = 10_000  # text only: the images are files beside it
    reads = frozenset({"layout"})

    @classmethod
    def create(cls, root: Path, final_dir: Path, options: ExportOptions, run_info: dict[str, Any]) -> ExportWriter:
        if options.layout == "release":
            return UniEditReleaseWriter(root, final_dir, options, run_info)
        return cls(root, final_dir, options, run_info)

    @classmethod
    def check(cls, options: ExportOptions) -> None:
        if options.layout == "release" and (options.include_rejects or options.with_masks):
            raise ExportError(
                "the release layout has exactly the release's nine keys: drop --include-rejects and --with-masks, "
                "or use --layout default"
            )

    def __init__(self, root: Path, final_dir: Path, options: ExportOptions, run_info: dict[str, Any]) -> None:
        self.root = root
        self.options = options
        self.run_info = run_info
        self.shards = {split: JsonlShards(root / "data", split, options.shard_rows) for split in SPLITS}
        self.pair_shards = {
            split: JsonlShards(root / "preference", split, options.shard_rows) for split in SPLITS
        }
        self._paths: dict[str, tuple[str, str]] = {}
        self._rejects_per_id: Counter[str] = Counter()

    def add(self, sample: Sample, split: str, masked: tuple[np.ndarray, float] | None) -> None:
        assert sample.source_image is not None and sample.edited_image is not None
        stem = safe_stem(sample.id)
        source_path = write_image(self.root, "images/source", stem, sample.source_image)
        edited_path = write_image(self.root, "images/edited", stem, sample.edited_image)
        row = sample_row(sample, source_path, edited_path)
        # multi-turn chains: one row per turn; turn k's image_path is turn k-1's output image
        row.update(chain_id=sample.chain_id or sample.id, turn=sample.turn, parent_id=sample.parent_id)
        if masked is not None:
            mask, weight = masked
            row["mask_path"] = write_image(self.root, "images/mask", stem, mask_to_png(mask))
            row["edit_weight"] = weight
        if self.options.include_rejects:
            self._paths[sample.id] = (source_path, edited_path)
        self.shards[split].write(row)

    def add_pair(self, pair: PreferencePair, split: str) -> None:
        chosen, rejected = pair.chosen, pair.rejected
        assert rejected.edited_image is not None
        index = self._rejects_per_id[rejected.id]
        self._rejects_per_id[rejected.id] += 1
        source_path, chosen_path = self._paths[chosen.id]
        rejected_path = write_image(
            self.root, "images/rejected", f"{safe_stem(rejected.id)}-r{index}", rejected.edited_image
        )
        row = {
            "id": chosen.id,
            "task_category": chosen.task_category,
            "original_question": chosen.original_question,
            "original_answer": chosen.original_answer,
            "image_path": source_path,
            "edit_instruction": chosen.edit_instruction,
            "chosen_image_path": chosen_path,
            "rejected_image_path": rejected_path,
            "chosen_score": chosen.score,
            "rejected_score": rejected.score,
            "reject_reason": rejected.reject_reason.value if rejected.reject_reason else None,
            "rejected_analysis": rejected.analysis,
        }
        self.pair_shards[split].write(row)

    def finish(self, stats: CardStats) -> list[Path]:
        files = [path for shards in self.shards.values() for path in shards.close()]
        files += [path for shards in self.pair_shards.values() for path in shards.close()]
        (self.root / "README.md").write_text(self._card(stats), encoding="utf-8")
        return files

    def _card(self, stats: CardStats) -> str:
        configs: list[dict[str, Any]] = []
        sft = [{"split": s, "path": f"data/{s}-*.jsonl"} for s in SPLITS if self.shards[s].files]
        if sft:
            configs.append({"config_name": "default", "default": True, "data_files": sft})
        pairs = [{"split": s, "path": f"preference/{s}-*.jsonl"} for s in SPLITS if self.pair_shards[s].files]
        if pairs:
            configs.append({"config_name": "preference", "data_files": pairs})
        front = {
            "configs": configs,
            "task_categories": ["image-to-image"],
            "tags": ["image-editing", "uni-edit", "synthetic"],
        }
        usage = (
            "Rows are JSON lines in `data/<split>-NNNNN.jsonl`; `image_path`, `output_image_path` (and `mask_path`) "
            "are relative to this directory.\n\n"
            "```python\nimport json, pathlib\nfrom PIL import Image\n\nroot = pathlib.Path('.')\n"
            "for line in open(root / 'data/train-00000.jsonl'):\n    row = json.loads(line)\n"
            "    source = Image.open(root / row['image_path'])\n    edited = Image.open(root / row['output_image_path'])\n```"
        )
        body = card_body(
            stats, self.options, self.run_info, "Uni-Edit style editing data (uniedit-jsonl)", usage
        )
        return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n\n" + body
