"""The `bagel` export: BAGEL's `unified_edit` parquet format, its `parquet_info` JSON and the registration snippet.

Read against ByteDance-Seed/Bagel (commit 056b5fd):

* ``data/interleave_datasets/edit_dataset.py`` ``UnifiedEditIterableDataset.parse_row``: ``row["image_list"]`` is a
  list of encoded images (``Image.open(io.BytesIO(...))`` then ``pil_img2rgb``), ``row["instruction_list"][i-1]``
  is the list of alternative instructions from image i-1 to image i (it ``random.choice``s one). With two
  images it always takes start 0, end 1: source (conditioning, no loss) → instruction → edited (loss).
  With k+1 images (a multi-turn chain, ``--turns``) it draws ``start_idx`` from ``range(image_num - 1)`` and
  ``end_idx`` within three images of it; for two transitions it may join their instructions (``". "``) into
  one, so each chain is one row: ``image_list`` = [source, edit 1, ..., edit k], ``instruction_list`` = one
  ``[instruction]`` per transition.
* ``data/interleave_datasets/interleave_t2i_dataset.py`` ``ParquetStandardIterableDataset``: ``get_data_paths``
  keeps only files whose path is a key of ``parquet_info`` and expands each into ``num_row_groups`` units;
  ``__iter__`` reads one row group at a time (``pq.ParquetFile(f).read_row_group(i).to_pandas()``).
* ``data/parquet_utils.py`` ``get_parquet_data_paths``: the file paths are ``os.path.join(data_dir, name)`` for
  every ``*.parquet`` in ``os.listdir(data_dir)`` — so ``parquet_info`` keys must be built from the very same
  ``data_dir`` string that ``DATASET_INFO`` holds, or every file is silently skipped.
* ``data/dataset_base.py`` ``PackedDataset.build_datasets``: reads ``data_dir`` and ``parquet_info_path`` from
  ``DATASET_INFO[group][name]`` (``num_files``/``num_total_samples`` are informational there).
* ``data/distributed_iterable_dataset.py``: row groups (not files) are split over ranks × workers with floor
  division, so a run needs at least GPUs × num_workers row groups — hence the small row groups here.

```
<out>/train/uniedit-00000.parquet ...     BAGEL `data_dir` (nothing but these parquet files inside)
<out>/validation/uniedit-00000.parquet    when val_fraction > 0
<out>/parquet_info/uniedit_train.json     {"<data_dir>/uniedit-00000.parquet": {"num_row_groups": k, "num_rows": n}}
<out>/bagel_dataset_info.py               the snippet to append to BAGEL's data/dataset_info.py
<out>/bagel_data_config.yaml              a --dataset_config_file for train/pretrain_unified_navit.py
<out>/README.md, <out>/export.json
```

After moving the export elsewhere (another machine, a mounted bucket), rewrite the paths with
``python -m uniedit_synth.export.bagel <export_dir> --data-dir <where BAGEL will see it>``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from ..core.errors import ExportError
from ..core.records import Sample
from .base import ExportWriter
from .card import CardStats
from .options import SPLITS, ExportOptions
from .parquet_shards import ParquetShardWriter
from .selection import PreferencePair

BAGEL_SCHEMA = pa.schema(
    [
        pa.field("image_list", pa.list_(pa.binary())),
        pa.field("instruction_list", pa.list_(pa.list_(pa.string()))),
        pa.field("id", pa.string()),
        pa.field("task_category", pa.string()),
    ]
)
#: `--with-reasoning`: the thinking text per transition, parallel to instruction_list
THINK_SCHEMA = BAGEL_SCHEMA.append(pa.field("think_list", pa.list_(pa.list_(pa.string()))))
#: BAGEL's inferencer.py GEN_THINK_SYSTEM_PROMPT: the system text of thinking-mode generation
GEN_THINK_SYSTEM_PROMPT = (
    "You should first think about the planning process in the mind and then generate the image. \n"
    "The planning process is enclosed within <think> </think> tags, i.e. <think> planning process here </think> "
    "image here"
)
FILE_PREFIX = "uniedit"

#: the `unified_edit` block of BAGEL's data/configs/example.yaml, with our dataset in it
IMAGE_TRANSFORM_ARGS = {"image_stride": 16, "max_image_size": 1024, "min_image_size": 512}
VIT_IMAGE_TRANSFORM_ARGS = {"image_stride": 14, "max_image_size": 518, "min_image_size": 224}


def think_text(reasoning: str) -> str:
    """The reasoning as BAGEL's thinking mode writes it before the image it generates: `<think> … </think>`."""
    return f"<think>{reasoning.strip()}</think>"


def bagel_row(sample: Sample, with_reasoning: bool = False) -> dict[str, Any]:
    """One BAGEL row: [source, edited] and one instruction list for the single transition; with reasoning,
    `think_list[i-1]` holds the thinking text that precedes image i."""
    return chain_row([sample], with_reasoning)


def chain_row(turns: list[Sample], with_reasoning: bool = False) -> dict[str, Any]:
    """One BAGEL row for a chain of k consecutive turns: `image_list` = [source, edit 1, …, edit k] and
    `instruction_list[i-1]` = [turn i's instruction], the transition from image i-1 to image i. Turn i's source
    is turn i-1's edited image byte for byte, so the list holds each image once. `parse_row` picks a start and
    an end within three images of it (one transition, or two with the instructions joined)."""
    first = turns[0]
    row = {
        "image_list": [first.source_image, *(t.edited_image for t in turns)],
        "instruction_list": [[t.edit_instruction] for t in turns],
        "id": first.id,
        "task_category": first.task_category,
    }
    if with_reasoning:
        row["think_list"] = [[think_text(t.reasoning)] if t.reasoning else [] for t in turns]
    return row


def parquet_info(files: list[Path], data_dir: str) -> dict[str, dict[str, int]]:
    """BAGEL's parquet_info mapping, keyed by os.path.join(data_dir, file name) exactly as BAGEL lists files."""
    info = {}
    for path in sorted(files):
        meta = pq.ParquetFile(path).metadata
        info[os.path.join(data_dir, path.name)] = {
            "num_row_groups": meta.num_row_groups,
            "num_rows": meta.num_rows,
        }
    return info


def dataset_name(base: str, split: str) -> str:
    return base if split == "train" else f"{base}_{split}"


def registration_snippet(entries: list[dict[str, Any]]) -> str:
    """Python to append to BAGEL's data/dataset_info.py (after DATASET_INFO is defined)."""
    lines = [
        "# Generated by `uniedit export --format bagel`. Append to BAGEL's data/dataset_info.py, below DATASET_INFO.",
        "# 'unified_edit' is UnifiedEditIterableDataset (data/interleave_datasets/edit_dataset.py), already in",
        "# DATASET_REGISTRY. parquet_info keys must equal os.path.join(data_dir, <file>): keep data_dir as written.",
    ]
    for entry in entries:
        lines += [
            f"DATASET_INFO.setdefault('unified_edit', {{}})[{entry['name']!r}] = {{",
            f"    'data_dir': {entry['data_dir']!r},",
            f"    'num_files': {entry['num_files']},",
            f"    'num_total_samples': {entry['num_total_samples']},",
            f"    'parquet_info_path': {entry['parquet_info_path']!r},",
            "}",
        ]
    return "\n".join(lines) + "\n"


def data_config(entry: dict[str, Any]) -> dict[str, Any]:
    """A BAGEL --dataset_config_file that trains on one registered dataset (example.yaml's unified_edit block)."""
    return {
        "unified_edit": {
            "dataset_names": [entry["name"]],
            "image_transform_args": dict(IMAGE_TRANSFORM_ARGS),
            "vit_image_transform_args": dict(VIT_IMAGE_TRANSFORM_ARGS),
            "is_mandatory": True,
            # number of parquet files to draw from data_dir (BAGEL repeats files when it exceeds them)
            "num_used_data": [entry["num_files"]],
            "weight": 1,
        }
    }


def write_registration(
    export_dir: str | Path, data_root: str | None = None, name: str = "uniedit"
) -> list[dict[str, Any]]:
    """(Re)write parquet_info/*.json, bagel_dataset_info.py and bagel_data_config.yaml for the parquet files in
    export_dir, with paths under `data_root` (where BAGEL will see the export; default: export_dir, absolute).
    Returns one entry per split with its name, data_dir, counts and row groups."""
    export_dir = Path(export_dir)
    root = data_root if data_root is not None else str(export_dir.resolve())
    entries = []
    (export_dir / "parquet_info").mkdir(exist_ok=True)
    for split in SPLITS:
        files = sorted((export_dir / split).glob("*.parquet"))
        if not files:
            continue
        data_dir = os.path.join(root, split)
        info = parquet_info(files, data_dir)
        info_name = f"{name}_{split}.json"
        (export_dir / "parquet_info" / info_name).write_text(json.dumps(info, indent=2) + "\n")
        entries.append(
            {
                "name": dataset_name(name, split),
                "split": split,
                "data_dir": data_dir,
                "num_files": len(files),
                "num_total_samples": sum(item["num_rows"] for item in info.values()),
                "num_row_groups": sum(item["num_row_groups"] for item in info.values()),
                "parquet_info_path": os.path.join(root, "parquet_info", info_name),
            }
        )
    (export_dir / "bagel_dataset_info.py").write_text(registration_snippet(entries))
    train = next((entry for entry in entries if entry["split"] == "train"), None)
    if train is not None:
        (export_dir / "bagel_data_config.yaml").write_text(
            yaml.safe_dump(data_config(train), sort_keys=False)
        )
    return entries


class BagelWriter(ExportWriter):
    """Writes the bagel layout into `root` (see the module docstring)."""

    name = "bagel"
    shard_rows = 1_000
    row_group_rows = 32  # BAGEL hands row groups (not files) to its ranks × workers: keep them small
    pairs = False
    masks = False
    reads = frozenset({"with_reasoning", "bagel_data_dir", "bagel_name"})

    @classmethod
    def check(cls, options: ExportOptions) -> None:
        if options.include_rejects:
            raise ExportError(
                "the bagel format has no preference pairs; drop --include-rejects or export to hf/uniedit-jsonl"
            )
        if options.with_masks:
            raise ExportError(
                "BAGEL's trainer cannot use edit masks; drop --with-masks or export to hf/uniedit-jsonl"
            )

    def __init__(self, root: Path, final_dir: Path, options: ExportOptions, run_info: dict[str, Any]) -> None:
        self.root = root
        self.options = options
        self.data_root = options.bagel_data_dir or str(final_dir)
        self.shards = {
            split: ParquetShardWriter(
                root / split,
                FILE_PREFIX,
                THINK_SCHEMA if options.with_reasoning else BAGEL_SCHEMA,
                shard_rows=options.shard_rows,
                row_group_rows=options.row_group_rows,
            )
            for split in SPLITS
        }
        self._chain: list[Sample] = []  # the turns of the chain being read (multi-turn runs)
        self._chain_split = "train"

    def add(self, sample: Sample, split: str, masked: tuple[np.ndarray, float] | None) -> None:
        """Rows arrive in id order, so a chain's turns arrive together (one shard holds a whole chain): a row
        is written when the next sample is not the next turn of the same chain."""
        chain = self._chain
        if chain and (sample.chain_id != chain[-1].chain_id or sample.turn != chain[-1].turn + 1
                      or split != self._chain_split):
            self._flush_chain()
        if not self._chain:
            self._chain_split = split
        self._chain.append(sample)

    def _flush_chain(self) -> None:
        if self._chain:
            self.shards[self._chain_split].write(chain_row(self._chain, self.options.with_reasoning))
        self._chain = []

    def add_pair(self, pair: PreferencePair, split: str) -> None:
        raise NotImplementedError("BAGEL's unified_edit format has no preference pairs")

    def finish(self, stats: CardStats) -> list[Path]:
        self._flush_chain()
        files = [path for shards in self.shards.values() for path in shards.close()]
        entries = write_registration(self.root, self.data_root, self.options.bagel_name)
        text = readme(entries, stats) + (THINK_README if self.options.with_reasoning else "")
        (self.root / "README.md").write_text(text, encoding="utf-8")
        return files


def readme(entries: list[dict[str, Any]], stats: CardStats) -> str:
    lines = [
        "# Uni-Edit style editing data for BAGEL (`unified_edit`)\n",
        "Parquet rows with `image_list` ([source PNG, edited PNG] as bytes) and `instruction_list` "
        "([[instruction]]), read by BAGEL's `UnifiedEditIterableDataset`.\n",
        "| dataset name | data_dir | files | rows | row groups |",
        "|---|---|---:|---:|---:|",
    ]
    for entry in entries:
        lines.append(
            f"| {entry['name']} | `{entry['data_dir']}` | {entry['num_files']} | {entry['num_total_samples']} | "
            f"{entry['num_row_groups']} |"
        )
    lines += [
        "",
        "1. Append `bagel_dataset_info.py` to BAGEL's `data/dataset_info.py`.",
        "2. Train with `--dataset_config_file <this dir>/bagel_data_config.yaml` (see examples/bagel/README.md).",
        "3. BAGEL splits **row groups** over GPUs × `--num_workers`; it needs at least that many row groups "
        "(a worker that gets none loops forever). Re-export with a smaller `row_group_rows` if needed.",
        "4. Moved the export? `python -m uniedit_synth.export.bagel <this dir> --data-dir <new path>` rewrites the paths.",
        "",
        f"Categories: {', '.join(f'{k} {v}' for k, v in stats.categories().items()) or 'none'}.",
        "",
    ]
    return "\n".join(lines)


THINK_README = f"""
## Reasoning (`--with-reasoning`)

Each row also has `think_list` (parallel to `instruction_list`): `think_list[i-1]` is `[<think>…</think>]`, the
reasoning trace (question → answer → branch → edit, checked against the instruction plan) that BAGEL's thinking
mode generates before image i. BAGEL's inferencer, with `think=True`, starts the context with the system text

    {GEN_THINK_SYSTEM_PROMPT}

then generates the `<think> … </think>` text and, with that text in context, the image. To train that order, read
the row as BAGEL's think-trace data does (`_add_text(..., need_loss=True, next_token_label=<|vision_start|>)`
for the thinking text, between the instruction (no loss) and the edited image (loss)): source image (no loss,
VAE + ViT) → instruction (no loss) → think text (loss) → edited image (loss). BAGEL's stock
`UnifiedEditIterableDataset` reads only `image_list` and `instruction_list` and ignores the extra column.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Rewrite the BAGEL registration files of a bagel export for a new path."
    )
    parser.add_argument("export_dir")
    parser.add_argument("--data-dir", required=True, help="where BAGEL will see the export dir")
    parser.add_argument("--name", default="uniedit", help="dataset name in DATASET_INFO['unified_edit']")
    args = parser.parse_args(argv)
    for entry in write_registration(args.export_dir, args.data_dir, args.name):
        print(
            f"{entry['name']}: {entry['data_dir']} ({entry['num_total_samples']} rows, {entry['num_row_groups']} row groups)"
        )


if __name__ == "__main__":
    main()
