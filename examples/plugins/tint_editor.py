"""An example edit-backend plugin: a "local model" that tints the source image.

Use it from a pipeline YAML (the module must be importable on the driver and on every Ray node: installed in
their Python, or on PYTHONPATH):

    backends:
      editor:
        type: examples.plugins.tint_editor:TintEditor
        model: tint-v1
        options: {colour: [255, 64, 64], strength: 0.5}
        resources: {num_gpus: 1}        # a real local model: workers land on GPU nodes

It follows the EditBackend protocol (uniedit_synth/backends/base.py): a cheap constructor (the driver builds
it once to check the options, so no weights are loaded there), `start()` to load the model (called once per
worker process, before its first call), `edit()` for one call, `aclose()`. The engine adds the response cache,
rate limits, retries and cost accounting.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from pathlib import Path

from PIL import Image

from uniedit_synth.backends.base import BadRequest, EditReply, EditRequest, Usage
from uniedit_synth.core.config import BackendSpec
from uniedit_synth.core.errors import BackendConfigError


class TintEditor:
    provider = "tint"  # rate-limit bucket `tint/<model>`
    reads_context = False  # only the instruction and image reach the model: context stays out of cache keys

    def __init__(self, spec: BackendSpec, seed: int = 0) -> None:
        self.spec = spec
        unknown = set(spec.options) - {"colour", "strength", "load_log"}
        if unknown:
            raise BackendConfigError(f"tint editor: unknown option(s) {sorted(unknown)}")
        colour = spec.options.get("colour", [255, 64, 64])
        if not (isinstance(colour, list) and len(colour) == 3 and all(isinstance(c, int) for c in colour)):
            raise BackendConfigError("tint editor: options.colour must be [r, g, b]")
        self.colour = tuple(colour)
        self.strength = float(spec.options.get("strength", 0.5))
        self.load_log = spec.options.get("load_log")  # a folder: start() notes where it ran (for the tests)
        self._overlay: Image.Image | None = None

    async def start(self) -> None:
        """'Load the weights': here a colour layer; a real plugin would load a diffusers pipeline."""
        self._overlay = Image.new("RGB", (1, 1), self.colour)
        if self.load_log:
            where = {"pid": os.getpid(), "time": time.time()}
            try:
                import ray

                if ray.is_initialized():
                    where["ray_resources"] = ray.get_runtime_context().get_assigned_resources()
            except ImportError:
                pass
            Path(self.load_log, f"start-{os.getpid()}.json").write_text(json.dumps(where))

    async def edit(self, request: EditRequest) -> EditReply:
        if self._overlay is None:
            raise RuntimeError("TintEditor.start() was not called before edit()")
        image = await asyncio.to_thread(self._tint, request.image)
        return EditReply(image=image, model=self.spec.model, usage=Usage(images_in=1, images_out=1))

    def _tint(self, data: bytes) -> bytes:
        try:
            with Image.open(io.BytesIO(data)) as source:
                rgb = source.convert("RGB")
        except Exception:
            raise BadRequest("tint editor: the source image cannot be decoded") from None
        tinted = Image.blend(rgb, self._overlay.resize(rgb.size), self.strength)
        out = io.BytesIO()
        tinted.save(out, format="PNG")
        return out.getvalue()

    async def aclose(self) -> None:
        self._overlay = None
