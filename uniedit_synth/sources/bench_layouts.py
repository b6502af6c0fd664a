"""The image-editing benchmarks that ship in folder layouts of their own (ImgEdit-Bench, KRIS-Bench, RISEBench), as
source classes of the registry: each says which folders it opens and gives its items as plain rows (`key`,
`image_path`, `instruction`), which sources/benchmarks.py fingerprints for `--against` and
`source.decontaminate`. They hold edit instructions, not question / answer pairs: opened as a run's
`source.spec` they say so. A benchmark in another layout is one more such class, registered with
`register_source` (sources/registry.py). The layouts are tabled in sources/benchmarks.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import SourceError
from ..core.records import VQARecord
from .base import Source
from .files import require_regular_file

if TYPE_CHECKING:
    from ..core.config import SourceSpec


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise SourceError(f"{path} not found: {what}")
    return path


def _load_json(path: Path) -> Any:
    require_regular_file(path, "benchmark file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot read {path}: {exc}") from None


def _row(key: str, image: Path | None, instruction: Any) -> dict[str, Any]:
    return {"key": key, "image_path": str(image) if image is not None else None,
            "instruction": instruction if isinstance(instruction, str) else None}


class BenchmarkLayout(Source):
    """A benchmark folder in its own layout: found by `recognises(folder)`, read by `raw_rows(folder)`."""

    label = "benchmark"

    def __iter__(self) -> Iterator[VQARecord]:
        return iter(())

    @classmethod
    def recognises(cls, folder: Path) -> bool:
        return False

    @classmethod
    def opens(cls, spec: str) -> bool:
        path = Path(spec).expanduser()
        return path.is_dir() and cls.recognises(path)

    @classmethod
    def open(cls, spec: SourceSpec, *, seed: int, limit: int | None, subject_key: str | None) -> Source:
        raise SourceError(
            f"{spec.spec}: a copy of the editing benchmark {cls.label} (edit instructions, no question/answer "
            "pairs); give it to `uniedit audit --against` or source.decontaminate, not as the run's source"
        )


class ImgEditBench(BenchmarkLayout):
    """`basic_edit.json`: `{key: {"id": "<rel image>", "prompt": …}}`, images under `singleturn/`."""

    label = "imgedit-bench"

    @classmethod
    def recognises(cls, folder: Path) -> bool:
        return (folder / "basic_edit.json").is_file()

    @classmethod
    def raw_rows(cls, path: Path, options: Mapping[str, Any] | None = None) -> Iterator[Mapping[str, Any]]:
        annotations = _load_json(_need(path / "basic_edit.json", "an ImgEdit-Bench copy has basic_edit.json"))
        images = path / "singleturn" if (path / "singleturn").is_dir() else path
        if not isinstance(annotations, dict):
            raise SourceError(f"{path}/basic_edit.json: expected an object keyed by item id")
        for key, entry in annotations.items():
            entry = entry if isinstance(entry, dict) else {}
            rel = entry.get("id")
            yield _row(str(key), images / str(rel) if rel else None, entry.get("prompt"))


class KrisBench(BenchmarkLayout):
    """`<category>/annotation.json`: `{image_id: {"ori_img": name or [names], "ins_en": …}}`."""

    label = "kris-bench"

    @classmethod
    def recognises(cls, folder: Path) -> bool:
        return any(folder.glob("*/annotation.json"))

    @classmethod
    def raw_rows(cls, path: Path, options: Mapping[str, Any] | None = None) -> Iterator[Mapping[str, Any]]:
        files = sorted(path.glob("*/annotation.json"))
        if not files:
            raise SourceError(f"{path}: a KRIS-Bench copy has <category>/annotation.json files")
        for file in files:
            annotations = _load_json(file)
            if not isinstance(annotations, dict):
                raise SourceError(f"{file}: expected an object keyed by image id")
            for key, entry in annotations.items():
                entry = entry if isinstance(entry, dict) else {}
                names = entry.get("ori_img")
                names = names if isinstance(names, list) else [names]
                for n, name in enumerate(x for x in names if x):
                    suffix = f"#{n}" if n else ""
                    yield _row(f"{file.parent.name}/{key}{suffix}", file.parent / str(name),
                               entry.get("ins_en") if not n else None)


class RiseBench(BenchmarkLayout):
    """`datav2_total_w_subtask.json`: a list of `{"index", "instruction", "image": "<cat>_images/<n>.png"}`,
    images under `data/`."""

    label = "risebench"

    @classmethod
    def recognises(cls, folder: Path) -> bool:
        return (folder / "datav2_total_w_subtask.json").is_file()

    @classmethod
    def raw_rows(cls, path: Path, options: Mapping[str, Any] | None = None) -> Iterator[Mapping[str, Any]]:
        rows = _load_json(_need(path / "datav2_total_w_subtask.json", "a RISEBench copy has this JSON"))
        images = path / "data" if (path / "data").is_dir() else path
        if not isinstance(rows, list):
            raise SourceError(f"{path}/datav2_total_w_subtask.json: expected a list of items")
        for n, row in enumerate(rows):
            row = row if isinstance(row, dict) else {}
            rel = row.get("image")
            rel = rel[0] if isinstance(rel, list) and rel else rel
            yield _row(str(row.get("index", n)), images / str(rel) if rel else None, row.get("instruction"))
