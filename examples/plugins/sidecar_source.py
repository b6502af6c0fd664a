"""An example source plugin: a folder of images, each with a `<name>.qa.txt` sidecar holding its question (first
line) and answer (second line).

Use it with `source.type` (the module must be importable on the driver and, under Ray, on every node):

    uniedit synth --source sidecar:data/shots --set source.type=examples.plugins.sidecar_source:SidecarSource

    # or in a pipeline YAML
    source:
      type: examples.plugins.sidecar_source:SidecarSource
      spec: sidecar:data/shots

Registered once (`uniedit_synth.sources.register_source("sidecar", "examples.plugins.sidecar_source:SidecarSource")`)
it opens every `sidecar:` spec without `source.type`: that is what `opens` is for.

The class follows sources/base.py `Source`: `opens` (which specs), `open` (the source of one spec),
`image_root_of` (where the relative image paths of its records live: workers resolve them there, without
opening the source) and `__iter__` (records in a fixed order; the engine shards, shuffles and caps them).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from uniedit_synth.core.config import SourceSpec
from uniedit_synth.core.errors import SourceError
from uniedit_synth.core.records import VQARecord
from uniedit_synth.sources.base import Source

PREFIX = "sidecar:"
SUFFIX = ".qa.txt"


def folder_of(spec: SourceSpec) -> Path:
    return Path((spec.spec or "").strip().removeprefix(PREFIX)).expanduser().resolve()


class SidecarSource(Source):
    def __init__(self, folder: Path, label: str = "sidecar") -> None:
        self.folder = folder
        self.label = label
        self.image_root = folder

    @classmethod
    def opens(cls, spec: str) -> bool:
        return spec.startswith(PREFIX)

    @classmethod
    def open(cls, spec: SourceSpec, *, seed: int, limit: int | None, subject_key: str | None) -> SidecarSource:
        folder = folder_of(spec)
        if not folder.is_dir():
            raise SourceError(f"sidecar source: {folder} is not a folder; give sidecar:<folder of images>")
        unknown = set(spec.options) - {"label", "shuffle_buffer"}
        if unknown:
            raise SourceError(f"sidecar source: unknown source.options {sorted(unknown)}; known: label")
        return cls(folder, label=str(spec.options.get("label", "sidecar")))

    @classmethod
    def image_root_of(cls, spec: SourceSpec) -> Path | None:
        return Path(spec.image_root).expanduser().resolve() if spec.image_root else folder_of(spec)

    def _sidecars(self) -> list[Path]:
        return sorted(self.folder.glob(f"*{SUFFIX}"))

    def __iter__(self) -> Iterator[VQARecord]:
        for sidecar in self._sidecars():
            stem = sidecar.name.removesuffix(SUFFIX)
            lines = sidecar.read_text(encoding="utf-8").splitlines()
            if len(lines) < 2:  # still a record (an `invalid_input` reject), so read == accepted + rejected
                yield VQARecord(id=f"{self.label}/{stem}", source=self.label, invalid="sidecar needs two lines")
                continue
            image = next((p.name for p in sorted(self.folder.glob(f"{stem}.*")) if p.name != sidecar.name), None)
            yield VQARecord(id=f"{self.label}/{stem}", source=self.label, image_path=image,
                            question=lines[0].strip(), answer=lines[1].strip())

    def estimated_len(self) -> int | None:
        return len(self._sidecars())
