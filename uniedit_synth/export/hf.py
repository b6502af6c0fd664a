"""The `hf` export: parquet shards with HF `Image` features and a dataset card, loadable with `datasets`.

```
<out>/README.md                                  YAML front matter (configs, data_files, features) + card
<out>/export.json                                ExportSummary of this export
<out>/data/train-00000-of-00002.parquet ...      SAMPLE_SCHEMA columns (+ edit_mask, edit_weight with masks)
<out>/data/validation-00000-of-00001.parquet     when val_fraction > 0
<out>/preference/train-00000-of-00001.parquet    config `preference`, with include_rejects
```

Rows keep every SAMPLE_SCHEMA column (the export is lossless, and train/loader.py reads it like a run), and
the parquet schema carries the `huggingface` metadata so that
``datasets.load_dataset("parquet", data_files=...)`` and ``datasets.load_dataset(<out>)`` give PIL images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from ..core.errors import ExportError
from ..core.records import (
    IMAGE_COLUMNS,
    IMAGE_STRUCT,
    SAMPLE_SCHEMA_FIELDS,
    Sample,
    sample_to_row,
    with_hf_metadata,
)
from ..method.masks import mask_to_png
from .base import ExportWriter
from .card import CardStats, card_body
from .files import safe_stem
from .options import SPLITS, ExportOptions
from .parquet_shards import ParquetShardWriter
from .selection import PreferencePair

MASK_COLUMNS = ("edit_mask",)
MASK_FIELDS = [pa.field("edit_mask", IMAGE_STRUCT), pa.field("edit_weight", pa.float32())]

PAIR_IMAGE_COLUMNS = ("source_image", "chosen_image", "rejected_image")
PAIR_SCHEMA = with_hf_metadata(
    pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("task_category", pa.string()),
            pa.field("original_question", pa.string()),
            pa.field("original_answer", pa.string()),
            pa.field("edit_instruction", pa.string()),
            pa.field("source_image", IMAGE_STRUCT),
            pa.field("chosen_image", IMAGE_STRUCT),
            pa.field("rejected_image", IMAGE_STRUCT),
            pa.field("chosen_score", pa.float32()),
            pa.field("rejected_score", pa.float32()),
            pa.field("reject_reason", pa.string()),
            pa.field("rejected_analysis", pa.string()),
        ]
    ),
    image_columns=PAIR_IMAGE_COLUMNS,
)


def sample_schema(with_masks: bool) -> pa.Schema:
    """The parquet schema of the default config: SAMPLE_SCHEMA, plus the mask columns when asked."""
    if not with_masks:
        return with_hf_metadata(pa.schema(SAMPLE_SCHEMA_FIELDS))
    return with_hf_metadata(
        pa.schema(SAMPLE_SCHEMA_FIELDS + MASK_FIELDS), image_columns=IMAGE_COLUMNS + MASK_COLUMNS
    )


def features_yaml(schema: pa.Schema) -> list[dict[str, Any]]:
    """The `dataset_info.features` YAML list for a schema, as `datasets` itself writes it."""
    import datasets  # heavy (pandas, fsspec...): only exports to hf pay for it

    return datasets.Features.from_arrow_schema(schema)._to_yaml_list()


def arrow_bytes(files: list[Path]) -> int:
    """Uncompressed size of the files' row groups: the card's `num_bytes` of a split."""
    total = 0
    for path in files:
        meta = pq.ParquetFile(path).metadata
        total += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    return total


class HfWriter(ExportWriter):
    """Writes the hf layout into `root` (see the module docstring)."""

    name = "hf"
    shard_rows = 500  # two images per row
    row_group_rows = 16  # a shuffled loader reads a group per miss
    hub = True

    def __init__(self, root: Path, final_dir: Path, options: ExportOptions, run_info: dict[str, Any]) -> None:
        self.root = root
        self.options = options
        self.run_info = run_info
        self.schema = sample_schema(options.with_masks)
        self.shards = {
            split: ParquetShardWriter(
                root / "data",
                split,
                self.schema,
                shard_rows=options.shard_rows,
                row_group_rows=options.row_group_rows,
                hub_names=True,
            )
            for split in SPLITS
        }
        self.pair_shards = {
            split: ParquetShardWriter(
                root / "preference",
                split,
                PAIR_SCHEMA,
                shard_rows=options.shard_rows,
                row_group_rows=options.row_group_rows,
                hub_names=True,
            )
            for split in SPLITS
        }

    def add(self, sample: Sample, split: str, masked: tuple[np.ndarray, float] | None) -> None:
        row = sample_to_row(sample)
        stem = safe_stem(sample.id)  # ids and source paths may hold `/`, `..`, control characters: never a path
        for column, suffix in (("source_image", ".png"), ("edited_image", ".edited.png")):
            if isinstance(row.get(column), dict):
                row[column] = {**row[column], "path": f"{stem}{suffix}"}
        if self.options.with_masks:
            assert masked is not None
            mask, weight = masked
            row["edit_mask"] = {"bytes": mask_to_png(mask), "path": f"{stem}.mask.png"}
            row["edit_weight"] = weight
        self.shards[split].write(row)

    def add_pair(self, pair: PreferencePair, split: str) -> None:
        chosen, rejected = pair.chosen, pair.rejected
        self.pair_shards[split].write(
            {
                "id": chosen.id,
                "task_category": chosen.task_category,
                "original_question": chosen.original_question,
                "original_answer": chosen.original_answer,
                "edit_instruction": chosen.edit_instruction,
                "source_image": {"bytes": chosen.source_image, "path": f"{safe_stem(chosen.id)}.png"},
                "chosen_image": {"bytes": chosen.edited_image, "path": f"{safe_stem(chosen.id)}.chosen.png"},
                "rejected_image": {"bytes": rejected.edited_image, "path": f"{safe_stem(chosen.id)}.rejected.png"},
                "chosen_score": chosen.score,
                "rejected_score": rejected.score,
                "reject_reason": rejected.reject_reason.value if rejected.reject_reason else None,
                "rejected_analysis": rejected.analysis,
            }
        )

    def finish(self, stats: CardStats) -> list[Path]:
        written = {split: shards.close() for split, shards in self.shards.items()}
        written_pairs = {split: shards.close() for split, shards in self.pair_shards.items()}
        (self.root / "README.md").write_text(self._card(stats, written, written_pairs), encoding="utf-8")
        return [path for paths in [*written.values(), *written_pairs.values()] for path in paths]

    def _card(
        self, stats: CardStats, written: dict[str, list[Path]], written_pairs: dict[str, list[Path]]
    ) -> str:
        configs: list[dict[str, Any]] = []
        infos: list[dict[str, Any]] = []
        for name, folder, schema, files, counts in (
            ("default", "data", self.schema, written, stats.rows),
            ("preference", "preference", PAIR_SCHEMA, written_pairs, stats.pairs),
        ):
            splits = [split for split in SPLITS if files[split]]
            if not splits:
                continue
            config: dict[str, Any] = {"config_name": name}
            if name == "default":
                config["default"] = True
            config["data_files"] = [
                {"split": split, "path": f"{folder}/{split}-*.parquet"} for split in splits
            ]
            configs.append(config)
            infos.append(
                {
                    "config_name": name,
                    "features": features_yaml(schema),
                    "splits": [
                        {"name": split, "num_bytes": arrow_bytes(files[split]), "num_examples": counts[split]}
                        for split in splits
                    ],
                }
            )
        front = {
            "configs": configs,
            "dataset_info": infos,
            "task_categories": ["image-to-image"],
            "tags": ["image-editing", "uni-edit", "synthetic"],
        }
        usage = (
            "```python\nimport datasets\n\nds = datasets.load_dataset('path/to/this/dir')  # or the Hub repo id\n"
            "ds['train'][0]['source_image']  # a PIL image\n"
            "# or: datasets.load_dataset('parquet', data_files={'train': 'data/train-*.parquet'})\n```\n\n"
            "For torch training: `uniedit_synth.train.loader.EditPairIterableDataset('path/to/this/dir')`."
        )
        body = card_body(stats, self.options, self.run_info, "Uni-Edit style editing data (hf)", usage)
        return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n\n" + body


def push_to_hub(
    export_dir: str | Path, repo_id: str, *, private: bool = True, token: str | None = None
) -> str:
    """Upload an hf export dir as a private dataset repo (one commit) through huggingface_hub: the token from
    the argument or HF_TOKEN, the Hub from HF_ENDPOINT (tests/e2e/test_push_to_hub.py points it at a local fake
    Hub). Returns the repo URL; a refused upload is a one-line ExportError (the export itself is kept)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(export_dir), repo_id=repo_id, repo_type="dataset",
                          commit_message="uniedit-synth export")
    except (HfHubHTTPError, ValueError, OSError) as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        hint = " (check HF_TOKEN)" if status in (401, 403) else ""
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ExportError(f"--push-to-hub {repo_id} failed{hint}: {first}; the export in {export_dir} is "
                          "complete, upload it again with --push-to-hub or huggingface-cli upload") from None
    return str(url)
