"""`uniedit export --format uniedit-jsonl --layout release`: the Uni-Edit release's own files, key for key.

What github.com/zhengdian1/Uni-Edit `data_gen/` leaves behind, and what its BAGEL fork reads
(`data/real_edit_dataset.py` · `SftEditJSONLIterableDataset`: one JSON object per line, images opened as
`os.path.join(data_dir, row["image_path"])` and `os.path.join(data_dir, row["output_image_path"])`,
`num_used_data` = a number of lines):

```
<out>/data.jsonl                       train rows (the release's data_final.jsonl)
<out>/validation.jsonl                 held-out rows, with val_fraction > 0
<out>/images/<parent>/<stem><ext>      source images
<out>/edited/<parent>/<stem>_<md5(edit_instruction)[:8]><ext>   edited images (forth_process.get_save_path)
<out>/README.md, export.json           dataset card, export summary
```

Each row has exactly the release's nine keys: ``task_category, original_question, original_answer,
process_answer, image_path, edit_instruction, output_image_path, analysis, score`` — no ``id``; ``score`` is the
visual-quality integer (what fifth_process_filter.py stores). ``<parent>/<stem><ext>`` are the last two
components of the source image's original path, as the release takes them (``image_path.split('/')[-2:]``),
made file-name safe; a record without a path uses its source name and id; two different images with one
name keep both (the second gets `-<sha256[:8]>`). Image bytes are written as they are stored (the edited ones
as the editor sent them) under those names, as the release saves Gemini's bytes; readers open images by
content.

The release's fifth step (fifth_process.py) is applied: rows whose edited-image name collides — the same
source image and the same instruction hash — are all removed (counted as ``duplicate_image_instruction``).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..core.errors import ExportError
from ..core.records import Sample
from .base import ExportWriter
from .card import CardStats, card_body
from .files import contained, image_suffix, safe_stem
from .options import ExportOptions
from .selection import PreferencePair

RELEASE_KEYS = (
    "task_category",
    "original_question",
    "original_answer",
    "process_answer",
    "image_path",
    "edit_instruction",
    "output_image_path",
    "analysis",
    "score",
)
SPLIT_FILES = {"train": "data.jsonl", "validation": "validation.jsonl"}
DUPLICATE_REASON = "duplicate_image_instruction"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def instruction_hash(instruction: str | None) -> str:
    """forth_process.get_save_path: md5 of the instruction, 8 hex digits ("no_instr" without one)."""
    return hashlib.md5(instruction.encode("utf-8")).hexdigest()[:8] if instruction else "no_instr"


def _safe(component: str) -> str:
    return _UNSAFE.sub("_", component).strip("._-")[:100]


def source_name(sample: Sample, data: bytes) -> tuple[str, str, str]:
    """(parent, stem, ext) of a sample's source image: the last two components of its original path, as the
    release splits them, made safe; else (source, safe id, suffix of the bytes)."""
    path = (sample.source_image_path or "").replace("\\", "/")
    if path and "://" not in path:
        relative = "/".join(path.split("/")[-2:])
        parent = _safe(posixpath.dirname(relative))
        stem, ext = posixpath.splitext(posixpath.basename(relative))
        stem, ext = _safe(stem), ext.lower() if re.fullmatch(r"\.[A-Za-z0-9]{1,5}", ext or "") else ""
        if stem:
            return parent or _safe(sample.source) or "images", stem, ext or image_suffix(data) or ".png"
    return _safe(sample.source) or "images", safe_stem(sample.id), image_suffix(data) or ".png"


def sample_row(sample: Sample, image_path: str, output_image_path: str) -> dict[str, Any]:
    """One JSONL row in the Uni-Edit-148k key order (plus `id`, and `instruction_plan` as an extra key)."""
    return {
        "id": sample.id,
        "task_category": sample.task_category,
        "original_question": sample.original_question,
        "original_answer": sample.original_answer,
        "process_answer": sample.process_answer,
        "image_path": image_path,
        "edit_instruction": sample.edit_instruction,
        "output_image_path": output_image_path,
        "analysis": sample.analysis,
        "score": sample.score,
        # not in the release: the plan the instruction follows (style, candidate, expected branch, edits)
        "instruction_plan": sample.instruction_plan.model_dump(mode="json") if sample.instruction_plan else None,
        # not in the release: question → answer → branch → edit (reasoning.py), and the expected branch's edit
        "reasoning": sample.reasoning,
        "intended_effect": sample.intended_effect,
    }


def visual_quality_score(sample: Sample) -> int | None:
    value = sample.scores.visual_quality
    return int(round(value)) if value is not None else None


class UniEditReleaseWriter(ExportWriter):
    """Writes the release layout into `root` (see the module docstring); the uniedit-jsonl format's writer
    with `layout: release` (UniEditJsonlWriter.create)."""

    name = "uniedit-jsonl"
    pairs = False
    masks = False

    def __init__(self, root: Path, final_dir: Path, options: ExportOptions, run_info: dict[str, Any]) -> None:
        if options.include_rejects or options.with_masks:  # export._options refuses these first
            raise ExportError("the release layout has exactly the release's nine keys; use --layout default")
        self.root = root
        self.options = options
        self.run_info = run_info
        self.dropped: Counter[str] = Counter()
        self._sources: dict[str, str] = {}  # image_path -> sha256 of the bytes written there
        self._outputs: Counter[str] = Counter()
        #: output path -> (category, split, score) of every row that named it
        self._counted: dict[str, list[tuple[str, str, float | None]]] = {}
        self._pending = {split: root / f".{name}.pending" for split, name in SPLIT_FILES.items()}
        self._handles: dict[str, Any] = {}

    def _image_path(self, parent: str, stem: str, ext: str, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        relative = f"images/{parent}/{stem}{ext}"
        if self._sources.get(relative, digest) != digest:  # another image with the same name: keep both
            relative = f"images/{parent}/{stem}-{digest[:8]}{ext}"
        if relative not in self._sources:
            target = contained(self.root, relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            self._sources[relative] = digest
        return relative

    def add(self, sample: Sample, split: str, masked: tuple[np.ndarray, float] | None) -> None:
        assert sample.source_image is not None and sample.edited_image is not None
        parent, stem, ext = source_name(sample, sample.source_image)
        image_path = self._image_path(parent, stem, ext, sample.source_image)
        stem = posixpath.splitext(posixpath.basename(image_path))[0]
        output = f"edited/{parent}/{stem}_{instruction_hash(sample.edit_instruction)}{ext}"
        self._outputs[output] += 1
        if self._outputs[output] == 1:
            target = contained(self.root, output)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(sample.edited_image)
        self._counted.setdefault(output, []).append((sample.task_category or "unknown", split, sample.score))
        full = sample_row(sample, image_path, output)
        # the release's nine keys in its order; its `score` is the visual-quality integer, not our aggregate
        row = {key: full[key] for key in RELEASE_KEYS} | {"score": visual_quality_score(sample)}
        if split not in self._handles:
            self._handles[split] = self._pending[split].open("w", encoding="utf-8")
        self._handles[split].write(json.dumps(row, ensure_ascii=False) + "\n")

    def add_pair(self, pair: PreferencePair, split: str) -> None:  # pragma: no cover - refused in __init__
        raise ExportError("the release layout has no preference pairs")

    def finish(self, stats: CardStats) -> list[Path]:
        """Drop every row whose edited image name is shared (fifth_process.py), then write the JSONL files."""
        for handle in self._handles.values():
            handle.close()
        duplicated = {path for path, count in self._outputs.items() if count > 1}
        for path in sorted(duplicated):
            self.dropped[DUPLICATE_REASON] += self._outputs[path]
            for category, split, score in self._counted[path]:  # the export loop counted each of them
                stats.discard(category, split, score)
            contained(self.root, path).unlink()
        files: list[Path] = []
        for split, pending in self._pending.items():
            if split not in self._handles:
                continue
            final = self.root / SPLIT_FILES[split]
            with pending.open(encoding="utf-8") as source, final.open("w", encoding="utf-8") as target:
                for line in source:
                    if json.loads(line)["output_image_path"] not in duplicated:
                        target.write(line)
            os.remove(pending)
            files.append(final)
        (self.root / "README.md").write_text(self._card(stats), encoding="utf-8")
        return files

    def _card(self, stats: CardStats) -> str:
        configs = [
            {"split": split, "path": name}
            for split, name in SPLIT_FILES.items()
            if (self.root / name).exists()
        ]
        front = {
            "configs": [{"config_name": "default", "default": True, "data_files": configs}] if configs else [],
            "task_categories": ["image-to-image"],
            "tags": ["image-editing", "uni-edit", "synthetic"],
        }
        usage = (
            "The Uni-Edit release layout: `data.jsonl` has one JSON object per line with exactly the keys "
            f"{', '.join(f'`{k}`' for k in RELEASE_KEYS)}; `image_path` and `output_image_path` are relative to "
            "this directory, which is the `data_dir` of the Uni-Edit BAGEL fork's `SftEditJSONLIterableDataset` "
            "(`jsonl_path`: this directory's `data.jsonl`). `score` is the visual-quality score (1-5). Rows "
            "sharing a source image and an instruction were removed, as the release's fifth step does."
        )
        body = card_body(stats, self.options, self.run_info, "Uni-Edit editing data (release layout)", usage)
        return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n\n" + body
