"""A tuned Janus-Pro directory (saved by examples/finetune_janus_pro.py) as an editor of `uniedit eval`.

The model code lives in the examples (examples/edit_with_janus_pro.py conditions generation on the source as
the fine-tune does); they are found next to the package in a source checkout. Edits are cached under
`<out>/cache/` keyed by the weights' fingerprint, the instruction, the source image and the sampling, so a rerun
generates nothing.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import sys
from pathlib import Path
from typing import Any

from ..core.ledger import Ledger
from ..run.cache import ResponseCache
from .calls import EvalConfigError
from .items import EvalItem

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def is_janus_dir(model: str) -> bool:
    path = Path(model).expanduser()
    return path.is_dir() and (path / "config.json").is_file()


def _fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(folder)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


class JanusEditor:
    """Edits with a Janus-Pro checkpoint on one device, one item at a time (seeded per item)."""

    def __init__(self, label: str, location: str, cache: ResponseCache | None = None, *, device: str | None = None,
                 cfg_weight: float = 5.0, temperature: float = 1.0, seed: int = 0) -> None:
        if not (EXAMPLES / "edit_with_janus_pro.py").is_file():
            raise EvalConfigError(
                f"--model {location} is a Janus-Pro directory, whose editor lives in the repository's examples/: "
                "run `uniedit eval` from a source checkout of uniedit-synth"
            )
        self.label = label
        self.location = str(location)
        self.cache = cache
        self.sampling = {"cfg_weight": cfg_weight, "temperature": temperature, "seed": seed}
        self.device = device
        self.fingerprint = _fingerprint(Path(location)) if Path(location).is_dir() else self.location
        self.description = {"kind": "janus-pro", "model": self.location, "sampling": self.sampling}
        self._setup: Any = None

    def _load(self) -> Any:
        if str(EXAMPLES) not in sys.path:
            sys.path.insert(0, str(EXAMPLES))
        import torch

        finetune = importlib.import_module("finetune_janus_pro")
        self._editor = importlib.import_module("edit_with_janus_pro")
        device = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        setup = finetune.load_model(self.location, device)
        setup.model.eval()
        return setup

    def key(self, item: EvalItem) -> str:
        blob = json.dumps({"janus": self.fingerprint, "instruction": item.instruction, **self.sampling,
                           "image": hashlib.sha256(item.source).hexdigest(), "item": item.key}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    async def edit(self, item: EvalItem, ledger: Ledger) -> bytes:
        key = self.key(item)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            ledger.add("edit", 0.0, 0.0, True, key, kind="edit", model=self.location)
            return hit.payload
        if self._setup is None:
            self._setup = self._load()
        from ..method.masks import to_rgb

        seed = self.sampling["seed"] + int(hashlib.sha256(item.key.encode()).hexdigest()[:8], 16) % 100_000
        image = self._editor.edit_images(self._setup, [to_rgb(item.source)], [item.instruction],
                                         cfg_weight=self.sampling["cfg_weight"],
                                         temperature=self.sampling["temperature"], seed=seed)[0]
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        if self.cache is not None:
            self.cache.put(key, {"janus": self.location}, data)
        ledger.add("edit", 0.0, 0.0, False, key, kind="edit", model=self.location)
        return data

    async def aclose(self) -> None:
        self._setup = None


def janus_editor(label: str, location: str, cache: ResponseCache | None = None, **sampling: Any) -> JanusEditor:
    return JanusEditor(label, location, cache, **sampling)
