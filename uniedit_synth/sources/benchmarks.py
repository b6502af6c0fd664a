"""Evaluation benchmarks to decontaminate against: what `--against` and `source.decontaminate` accept.

A spec is one of

* a preset name, alone (`gedit-bench`: its Hugging Face data set) or with a local copy in the benchmark's own
  layout (`kris-bench=/data/KRIS_Bench`);
* a path: an image folder, or a .jsonl / .json / .csv / .parquet file whose rows hold an image (bytes, an
  HF image struct, or a path relative to the file) and/or an instruction or question column;
* `hf:<name or saved dir>[:config][@split]`: a `datasets` data set with such columns.

The layouts of the presets, as the benchmarks ship them:

| preset | source | annotation | image | text |
|---|---|---|---|---|
| `gedit-bench` | HF `stepfun-ai/GEdit-Bench` (parquet/arrow) | one row per item: `key`, `task_type`, `instruction`, `instruction_language`, `input_image`, `input_image_raw`, `Intersection_exist` | `input_image` | `instruction` |
| `imgedit-bench` | `Benchmark.tar` of HF `sysuyy/ImgEdit` | `basic_edit.json`: `{key: {"id": "<rel image>", "prompt": …, "edit_type": …}}` | `singleturn/<id>` | `prompt` |
| `kris-bench` | HF `Liang0223/KRIS_Bench` (a folder tree) | `<category>/annotation.json`: `{image_id: {"ori_img": name or [names], "ins_en": …, …}}` | `<category>/<ori_img>` | `ins_en` |
| `risebench` | HF `PhoenixZ/RISEBench` (`datav2_total_w_subtask.json` + `data.zip`) | a JSON list of `{"index", "category", "subtask", "instruction", "image": "<cat>_images/<n>.png", "reference"}` | `data/<image>` | `instruction` |

Fingerprints of a benchmark are computed once and cached as `<cache_dir>/bench-<name>-<content key>.parquet`,
the key being a sha256 of the benchmark's files (or the `datasets` fingerprint), so an edited benchmark is
hashed again and an unchanged one never is. Unreadable images are skipped with a warning and counted, and so
are images over `max_pixels` (the run's `input.max_pixels`: read from the header, never decoded) and paths that
are not regular files (a FIFO would block the read). A benchmark given as a FIFO, socket or device is refused.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..core.config import SourceSpec
from ..core.errors import SourceError, UniEditError
from ..method.fingerprint import Benchmark, ImageFingerprint, ImageUnreadable, fingerprint_image
from .bench_layouts import BenchmarkLayout
from .files import require_regular_file

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
IMAGE_COLUMNS = ("image", "input_image", "source_image", "image_path", "img", "ori_img", "file_name",
                 "image_file", "path")
TEXT_COLUMNS = ("instruction", "question", "prompt", "edit_instruction", "original_question", "ins_en",
                "text", "edit_prompt")
KEY_COLUMNS = ("key", "id", "index", "idx", "question_id", "uid")
CACHE_VERSION = 1


class BenchmarkError(UniEditError):
    """A benchmark given with --against or source.decontaminate cannot be read."""


@dataclass(frozen=True)
class Preset:
    name: str
    hf: str | None  # loadable with `datasets` by name
    fetch_hint: str


PRESETS = {
    "gedit-bench": Preset("gedit-bench", "stepfun-ai/GEdit-Bench", "hf:stepfun-ai/GEdit-Bench"),
    "imgedit-bench": Preset(
        "imgedit-bench", None, "Benchmark.tar of the HF data set sysuyy/ImgEdit (basic_edit.json + singleturn/)"
    ),
    "kris-bench": Preset("kris-bench", None, "the HF data set Liang0223/KRIS_Bench (one folder per category)"),
    "risebench": Preset(
        "risebench", None, "the HF data set PhoenixZ/RISEBench (datav2_total_w_subtask.json + data.zip unzipped)"
    ),
}


@dataclass
class BenchmarkItem:
    key: str
    image: bytes | None = None
    image_path: Path | None = None
    text: str | None = None


# ------------------------------------------------------------------------------------------ spec → reader
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60] or "benchmark"


def parse_spec(spec: str) -> tuple[str, str | None, str]:
    """(preset or None-as-'', location, display name)."""
    spec = spec.strip()
    if not spec:
        raise BenchmarkError("an empty benchmark spec; pass a path, hf:<name> or a preset name")
    name, sep, location = spec.partition("=")
    if sep and name.lower() in PRESETS:
        return name.lower(), location, name.lower()
    if spec.lower() in PRESETS:
        preset = PRESETS[spec.lower()]
        if preset.hf is None:
            raise BenchmarkError(
                f"{spec}: this benchmark ships as files, not a loadable data set; download {preset.fetch_hint} "
                f"and pass {spec.lower()}=<folder>"
            )
        return spec.lower(), f"hf:{preset.hf}", spec.lower()
    return "", spec, _slug(Path(spec).name if not spec.startswith("hf:") else spec[3:])


def _local(location: str) -> Path:
    """A local benchmark's path: a folder or a regular file (never a FIFO, whose read would wait forever)."""
    path = Path(location).expanduser()
    if not path.exists():
        raise BenchmarkError(f"benchmark {location} does not exist")
    return path if path.is_dir() else require_regular_file(path, "benchmark", BenchmarkError)


def _items(preset: str, location: str) -> Iterator[BenchmarkItem]:
    if location.startswith("hf:"):
        yield from _hf_items(location, preset)
        return
    path = _local(location)
    layout = _layout(preset, path)
    if layout is not None:
        yield from _layout_items(layout, path)
    elif preset == "gedit-bench" and path.is_dir() and any(path.glob("**/*.parquet")):
        for file in sorted(path.glob("**/*.parquet")):  # a snapshot of the hub repo
            yield from _table_items(file, preset)
    elif preset == "gedit-bench" and path.is_dir():
        yield from _hf_items(f"hf:{path}", preset)  # datasets' save_to_disk
    elif path.is_dir():
        yield from _folder_items(path)
    else:
        yield from _table_items(path, preset)


def _layout(preset: str, path: Path) -> type[BenchmarkLayout] | None:
    """The source class of a benchmark folder in its own layout (ImgEdit, KRIS, RISE: sources/bench_layouts.py,
    through the source registry): the one the preset names, else the first registered layout that recognises
    the folder; None for anything else."""
    from .registry import source_classes

    layouts = source_classes(BenchmarkLayout)
    named = next((cls for name, cls in layouts if name == preset), None)
    if named is not None or preset or not path.is_dir():
        return named
    return next((cls for _, cls in layouts if cls.recognises(path)), None)


def _layout_items(layout: type[BenchmarkLayout], path: Path) -> Iterator[BenchmarkItem]:
    try:
        for row in layout.raw_rows(path):
            image = row.get("image_path")
            yield BenchmarkItem(str(row["key"]), image_path=Path(image) if image else None, text=row.get("instruction"))
    except SourceError as exc:
        raise BenchmarkError(str(exc)) from None


def _folder_items(root: Path) -> Iterator[BenchmarkItem]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise BenchmarkError(f"{root}: no images (and no benchmark annotation file) in this folder")
    for file in files:
        yield BenchmarkItem(str(file.relative_to(root)), image_path=file)


def _pick(columns: list[str], wanted: tuple[str, ...]) -> str | None:
    lower = {c.lower(): c for c in columns}
    return next((lower[w] for w in wanted if w in lower), None)


def _rows(path: Path) -> tuple[list[str], Iterator[dict[str, Any]]]:
    """A benchmark table's columns and rows, read by the source class that opens the file (the source
    registry: .jsonl, .json arrays, .csv / .tsv, .parquet, and any registered plugin form), streamed. A .json
    object is the benchmarks' own layout, one row per key (`{id: row}`, as ImgEdit's annotations are)."""
    from .registry import source_class

    try:
        if path.suffix.lower() == ".json" and _json_object(path):
            data = json.loads(path.read_text(encoding="utf-8"))
            rows: Iterator[dict[str, Any]] = iter([r for r in data.values() if isinstance(r, dict)])
        else:
            cls = source_class(SourceSpec(spec=str(path))) if path.is_file() else None
            if cls is None:
                raise BenchmarkError(
                    f"{path}: not a benchmark file (.jsonl, .json, .csv, .parquet), folder or hf: data set"
                )
            rows = _read(path, (dict(r) for r in cls.raw_rows(path)))
        head = list(itertools.islice(rows, 100))
    except (OSError, ValueError, pa.ArrowException, NotImplementedError, SourceError) as exc:
        raise BenchmarkError(f"cannot read benchmark {path}: {exc}") from None
    names = sorted({k for r in head for k in r})
    return names, itertools.chain(head, rows)


def _read(path: Path, rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    try:
        yield from rows
    except SourceError as exc:
        raise BenchmarkError(f"cannot read benchmark {path}: {exc}") from None


def _json_object(path: Path) -> bool:
    from .rowfiles import json_top_level

    with path.open("rb") as fh:
        return json_top_level(fh) == b"{"


def _columns(names: list[str], where: str, preset: str) -> tuple[str | None, str | None, str | None]:
    image_col = "input_image" if preset == "gedit-bench" and "input_image" in names else _pick(names, IMAGE_COLUMNS)
    text_col = _pick(names, TEXT_COLUMNS)
    if image_col is None and text_col is None:
        raise BenchmarkError(
            f"{where}: no image column ({', '.join(IMAGE_COLUMNS[:4])}, …) and no instruction/question column "
            f"({', '.join(TEXT_COLUMNS[:4])}, …); columns are {', '.join(names[:12]) or 'none'}"
        )
    return image_col, text_col, _pick(names, KEY_COLUMNS)


def _row_item(row: dict[str, Any], n: int, image_col, text_col, key_col, base: Path | None) -> BenchmarkItem:
    item = BenchmarkItem(str(row.get(key_col)) if key_col and row.get(key_col) is not None else str(n))
    value = row.get(image_col) if image_col else None
    if isinstance(value, dict):
        if value.get("bytes"):
            item.image = bytes(value["bytes"])
        elif value.get("path"):
            value = value["path"]
    if isinstance(value, (bytes, bytearray)):
        item.image = bytes(value)
    elif isinstance(value, list) and value:
        value = value[0]
    if isinstance(value, str) and value and base is not None:
        item.image_path = Path(value) if Path(value).is_absolute() else base / value
    elif value is not None and not isinstance(value, (str, dict, list, bytes, bytearray)):
        try:  # a PIL image from `datasets`
            buffer = io.BytesIO()
            value.save(buffer, format="PNG")
            item.image = buffer.getvalue()
        except Exception:  # noqa: BLE001 - anything else is not an image
            pass
    text = row.get(text_col) if text_col else None
    item.text = text if isinstance(text, str) else None
    return item


def _table_items(path: Path, preset: str) -> Iterator[BenchmarkItem]:
    names, rows = _rows(path)
    image_col, text_col, key_col = _columns(names, str(path), preset)
    for n, row in enumerate(rows):
        yield _row_item(row, n, image_col, text_col, key_col, path.parent)


def _open_hf(location: str) -> Any:
    from .hf import load_hf, parse_hf_spec

    name, config, split = parse_hf_spec(location)
    try:
        data = load_hf(name, config, split, {})
    except UniEditError as exc:
        raise BenchmarkError(f"benchmark {location}: {exc}") from None
    if hasattr(data, "keys") and not hasattr(data, "column_names"):  # a DatasetDict: take every split
        return [data[k] for k in sorted(data.keys())]
    return [data]


def _hf_items(location: str, preset: str) -> Iterator[BenchmarkItem]:
    n = 0
    for dataset in _open_hf(location):
        names = list(dataset.column_names)
        image_col, text_col, key_col = _columns(names, location, preset)
        if image_col is not None:
            import datasets

            if isinstance(dataset.features.get(image_col), datasets.Image):
                dataset = dataset.cast_column(image_col, datasets.Image(decode=False))
        for row in dataset:
            yield _row_item(row, n, image_col, text_col, key_col, None)
            n += 1


def content_key(preset: str, location: str) -> str:
    """sha256 over the benchmark's files (names and bytes), or the `datasets` fingerprint(s)."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{preset}|".encode())
    if location.startswith("hf:"):
        for dataset in _open_hf(location):
            digest.update(str(getattr(dataset, "_fingerprint", "")).encode())
            digest.update(str(len(dataset)).encode())
        return digest.hexdigest()[:20]
    path = _local(location)
    if path.is_file():  # a table: its bytes and those of every image file it names
        files = [(path.name, path)]
        files += [(str(item.image_path), item.image_path) for item in _items(preset, location) if item.image_path]
    else:
        files = [(str(p.relative_to(path)), p) for p in sorted(path.rglob("*")) if p.is_file()]
    for name, file in files:
        digest.update(name.encode() + b"\0")
        if not file.is_file():  # missing, or a FIFO (its read would block)
            digest.update(b"<not a file>")
            continue
        try:
            with file.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
        except OSError:
            digest.update(b"<missing>")
    return digest.hexdigest()[:20]


# ------------------------------------------------------------------------------------------ load + cache
CACHE_SCHEMA = pa.schema([("key", pa.string()), ("fingerprint", pa.string()), ("text", pa.string())])


def load_benchmark(spec: str, cache_dir: Path | None = None, max_pixels: int | None = None) -> Benchmark:
    """Fingerprints of one benchmark, from `cache_dir` when its content is unchanged; images over
    `max_pixels` are skipped (the bound of the run's own input images)."""
    preset, location, name = parse_spec(spec)
    key = content_key(preset, location)
    bench = Benchmark(name=name, spec=spec, content_key=key)
    bound = f"-px{max_pixels}" if max_pixels is not None else ""  # which images were skipped depends on it
    cache = cache_dir / f"bench-{name}-{key}{bound}.parquet" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        try:
            table = pq.read_table(cache)
            meta = json.loads((table.schema.metadata or {}).get(b"uniedit_audit", b"{}"))
            for row in table.to_pylist():
                bench.keys.append(row["key"])
                bench.images.append(ImageFingerprint.from_hex(row["fingerprint"]) if row["fingerprint"] else None)
                bench.texts.append(row["text"])
            bench.skipped_images = int(meta.get("skipped_images", 0))
            bench.from_cache = True
            return bench
        except (OSError, ValueError, KeyError, pa.ArrowException):
            log.warning("benchmark cache %s is unreadable; hashing the benchmark again", cache)
            bench = Benchmark(name=name, spec=spec, content_key=key)
    for item in _items(preset, location):
        fingerprint = None
        if item.image is not None or item.image_path is not None:
            try:
                if item.image is None and not item.image_path.is_file():
                    raise ImageUnreadable(f"{item.image_path} is not a regular file")
                data = item.image if item.image is not None else item.image_path.read_bytes()
                fingerprint = fingerprint_image(data, max_pixels)
            except (OSError, ImageUnreadable) as exc:
                bench.skipped_images += 1
                detail = exc.strerror if isinstance(exc, OSError) else str(exc)
                log.warning("benchmark %s: skipping the image of item %s: %s", name, item.key, detail)
        if fingerprint is None and not item.text:
            continue
        bench.keys.append(item.key)
        bench.images.append(fingerprint)
        bench.texts.append(item.text)
    if cache is not None:
        table = pa.Table.from_pylist(
            [{"key": k, "fingerprint": f.to_hex() if f else None, "text": t}
             for k, f, t in zip(bench.keys, bench.images, bench.texts, strict=True)],
            schema=CACHE_SCHEMA.with_metadata(
                {"uniedit_audit": json.dumps({"spec": spec, "skipped_images": bench.skipped_images})}
            ),
        )
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            temp = cache.with_name(f".{cache.name}.tmp")
            pq.write_table(table, temp)
            temp.replace(cache)
        except OSError as exc:
            log.warning("cannot cache benchmark fingerprints in %s: %s", cache.parent, exc.strerror or exc)
    return bench
