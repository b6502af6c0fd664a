"""What an evaluation edits: the items of a benchmark (in its own layout) or of an export's split, with the
fields each benchmark's judge needs (category, reference text or image, explanation, language).

The layouts are the ones sources/benchmarks.py documents for decontamination; here each item also keeps the
annotation its protocol reads (KRIS-Bench's `explain`, RISEBench's `reference`/`reference_img`/`reference_txt`,
GEdit-Bench's `task_type`/`instruction_language`/`Intersection_exist`, ImgEdit's `edit_type`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ..core.errors import UniEditError
from ..sources.benchmarks import PRESETS, parse_spec


class EvalInputError(UniEditError):
    """The benchmark or export split given to `uniedit eval` cannot be read."""


@dataclass
class EvalItem:
    key: str
    category: str
    instruction: str
    source: bytes
    #: what the protocol reads beyond the instruction (reference text, explanation, language, flags)
    extra: dict[str, Any] = field(default_factory=dict)
    #: a ground-truth image the protocol shows the judge (RISEBench `reference_img`), or a dataset's reference edit
    reference_image: bytes | None = None


@dataclass
class EvalSet:
    name: str  # the benchmark preset (kris-bench, risebench, gedit-bench, imgedit-bench) or "export"
    spec: str
    items: list[EvalItem]
    #: where a row came from, for the docs of an export split (its run's pipeline) — else None
    run_config: dict[str, Any] | None = None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise EvalInputError(f"cannot read {path}: {exc.strerror or exc}; is the benchmark copy complete?") from None


def _json(path: Path) -> Any:
    if not path.is_file():
        raise EvalInputError(f"{path} not found: not the benchmark's own layout (see `uniedit eval --help`)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvalInputError(f"cannot read {path}: {exc}") from None


def kris_items(root: Path) -> list[EvalItem]:
    """`<category>/annotation.json` → {image_id: {ori_img, ins_en | instruction, explain, …}}."""
    files = sorted(root.glob("*/annotation.json"))
    if not files:
        raise EvalInputError(f"{root}: a KRIS-Bench copy has <category>/annotation.json files")
    items = []
    for file in files:
        annotations = _json(file)
        if not isinstance(annotations, dict):
            raise EvalInputError(f"{file}: expected an object keyed by image id")
        for image_id, entry in annotations.items():
            if not isinstance(entry, dict) or not entry.get("ori_img"):
                continue
            names = entry["ori_img"] if isinstance(entry["ori_img"], list) else [entry["ori_img"]]
            instruction = entry.get("ins_en") or entry.get("instruction") or ""
            items.append(EvalItem(
                key=f"{file.parent.name}/{image_id}", category=file.parent.name, instruction=instruction,
                source=_read(file.parent / str(names[0])),
                extra={"explain": entry.get("explain") or "", "source_images": len(names)},
            ))
    return items


def rise_items(root: Path) -> list[EvalItem]:
    """`datav2_total_w_subtask.json` (or `data_total.json`): a list of {index, category, subtask, instruction,
    image, reference | reference_img | reference_txt, reasoning_img, consistency_free}; images under `data/`."""
    annotation = root / "datav2_total_w_subtask.json"
    if not annotation.is_file() and (root / "data_total.json").is_file():
        annotation = root / "data_total.json"
    rows = _json(annotation)
    images = root / "data" if (root / "data").is_dir() else root
    if not isinstance(rows, list):
        raise EvalInputError(f"{annotation}: expected a list of items")
    items = []
    for n, row in enumerate(rows):
        if not isinstance(row, dict) or not row.get("image"):
            continue
        rel = row["image"][0] if isinstance(row["image"], list) else row["image"]
        reference_image = _read(images / row["reference_img"]) if row.get("reference_img") else None
        extra = {k: row[k] for k in ("subtask", "reference", "reference_txt", "reasoning_img", "consistency_free",
                                                  "reasoning_wo_ins")
                 if row.get(k) not in (None, "")}
        items.append(EvalItem(
            key=str(row.get("index", n)), category=str(row.get("category") or "uncategorised"),
            instruction=str(row.get("instruction") or ""), source=_read(images / str(rel)),
            extra=extra, reference_image=reference_image,
        ))
    return items


def imgedit_items(root: Path) -> list[EvalItem]:
    """`basic_edit.json` → {key: {id: <rel image>, prompt, edit_type}}; images under `singleturn/`."""
    annotations = _json(root / "basic_edit.json")
    images = root / "singleturn" if (root / "singleturn").is_dir() else root
    if not isinstance(annotations, dict):
        raise EvalInputError(f"{root}/basic_edit.json: expected an object keyed by item id")
    return [
        EvalItem(key=str(key), category=str(entry.get("edit_type") or "unknown"),
                 instruction=str(entry.get("prompt") or ""), source=_read(images / str(entry["id"])))
        for key, entry in annotations.items() if isinstance(entry, dict) and entry.get("id")
    ]


def _image_bytes(value: Any) -> bytes | None:
    if isinstance(value, dict):
        value = value.get("bytes")
    return bytes(value) if isinstance(value, (bytes, bytearray)) and value else None


def gedit_items(location: str) -> list[EvalItem]:
    """HF `stepfun-ai/GEdit-Bench` rows: key, task_type, instruction, instruction_language, input_image,
    Intersection_exist — from a snapshot's parquet files, or `hf:<name or saved dir>`."""
    rows: list[dict[str, Any]] = []
    path = Path(location).expanduser()
    if not location.startswith("hf:") and path.exists():
        files = sorted(path.glob("**/*.parquet")) if path.is_dir() else [path]
        if files and all(f.suffix == ".parquet" for f in files):
            for file in files:
                rows.extend(pq.read_table(file).to_pylist())
        else:
            location = f"hf:{path}"
    if not rows:
        import datasets

        from ..sources.hf import load_hf, parse_hf_spec

        name, config, split = parse_hf_spec(location if location.startswith("hf:") else f"hf:{location}")
        data = load_hf(name, config, split, {})
        parts = [data[k] for k in sorted(data.keys())] if hasattr(data, "keys") and not hasattr(
            data, "column_names") else [data]
        for part in parts:
            if isinstance(part.features.get("input_image"), datasets.Image):
                part = part.cast_column("input_image", datasets.Image(decode=False))
            rows.extend(part)
    items = []
    for n, row in enumerate(rows):
        image = _image_bytes(row.get("input_image"))
        if image is None:
            continue
        language = str(row.get("instruction_language") or "en")
        key = str(row.get("key") if row.get("key") is not None else n)
        items.append(EvalItem(
            key=f"{key}/{language}", category=str(row.get("task_type") or "unknown"),
            instruction=str(row.get("instruction") or ""), source=image,
            extra={"language": language, "intersection": bool(row.get("Intersection_exist"))},
        ))
    if not items:
        raise EvalInputError(f"{location}: no GEdit-Bench rows with an input_image")
    return items


EXPORT_COLUMNS = ("id", "task_category", "edit_instruction", "original_question", "original_answer",
                  "process_answer", "source_image", "edited_image", "edit_program", "record_meta")


def export_items(root: Path, split: str) -> list[EvalItem]:
    """An `uniedit export --format hf` split (`data/<split>-*.parquet`); the dataset's edit is the reference."""
    name = "validation" if split in ("val", "validation") else split
    files = sorted((root / "data").glob(f"{name}-*.parquet"))
    if not files:
        raise EvalInputError(
            f"no {name} split under {root}/data: export with `uniedit export --format hf --val-fraction 0.1`"
        )
    items = []
    for file in files:
        parquet = pq.ParquetFile(file)
        columns = [c for c in EXPORT_COLUMNS if c in parquet.schema_arrow.names]
        for row in parquet.read(columns=columns).to_pylist():
            source = _image_bytes(row.get("source_image"))
            if source is None:
                continue
            extra = {k: row.get(k) for k in ("original_question", "original_answer", "process_answer",
                                               "edit_program", "record_meta")}
            items.append(EvalItem(
                key=str(row["id"]), category=str(row.get("task_category") or "others"),
                instruction=str(row.get("edit_instruction") or ""), source=source, extra=extra,
                reference_image=_image_bytes(row.get("edited_image")),
            ))
    return sorted(items, key=lambda item: item.key)


def load_eval_set(spec: str) -> EvalSet:
    """`kris-bench=DIR`, `risebench=DIR`, `imgedit-bench=DIR`, `gedit-bench[=DIR]`, or `export=DIR[@split]`."""
    name, sep, location = spec.partition("=")
    if sep and name.lower() == "export":
        where, _, split = location.partition("@")
        root = Path(where).expanduser()
        run_json = root / "run.json"
        config = None
        if run_json.is_file():
            config = (json.loads(run_json.read_text(encoding="utf-8")) or {}).get("config")
        return EvalSet("export", spec, unique_keys(export_items(root, split or "validation")), config)
    preset, location, _display = parse_spec(spec)
    if preset not in PRESETS:
        raise EvalInputError(
            f"--bench {spec}: name a benchmark in its own layout ({', '.join(f'{p}=DIR' for p in PRESETS)}) "
            "or an export's split (export=DIR[@validation])"
        )
    if preset == "gedit-bench":
        items = gedit_items(location)
    else:
        root = Path(location).expanduser()
        if not root.is_dir():
            raise EvalInputError(f"--bench {spec}: {root} is not a folder")
        items = {"kris-bench": kris_items, "risebench": rise_items, "imgedit-bench": imgedit_items}[preset](root)
    if not items:
        raise EvalInputError(f"--bench {spec}: no items with an image")
    return EvalSet(preset, spec, unique_keys(items))


def unique_keys(items: list[EvalItem]) -> list[EvalItem]:
    """Pairs are matched by key: a key seen before gets `#n` (the benchmark's order decides which)."""
    seen: dict[str, int] = {}
    for item in items:
        count = seen.get(item.key, 0)
        seen[item.key] = count + 1
        if count:
            item.key = f"{item.key}#{count}"
    return items
