"""The backend registry's plugin path: `type: package.module:Class`, checked against the backend protocols."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from uniedit_synth.backends.base import EditRequest
from uniedit_synth.backends.registry import create_backend
from uniedit_synth.core.config import BackendSpec
from uniedit_synth.core.errors import BackendConfigError


class NotAnEditor:
    provider = "x"

    def __init__(self, spec, seed=0):
        pass

    async def aclose(self):
        return None


def spec(type_name: str, **options) -> BackendSpec:
    return BackendSpec(type=type_name, model="m", options=options)


def test_plugin_class_is_loaded_and_started():
    editor = create_backend("editor", spec("examples.plugins.tint_editor:TintEditor"), "edit")
    png = io.BytesIO()
    Image.new("RGB", (4, 4), (0, 0, 255)).save(png, format="PNG")

    async def go():
        await editor.start()
        return await editor.edit(EditRequest(model="m", instruction="tint", image=png.getvalue()))

    reply = asyncio.run(go())
    assert Image.open(io.BytesIO(reply.image)).getpixel((0, 0)) == (127, 32, 159)  # half way to the default red (255, 64, 64)


def test_plugin_errors_are_one_line_config_errors():
    with pytest.raises(BackendConfigError, match="cannot be loaded: No module named 'no_such_pkg'.*PYTHONPATH"):
        create_backend("editor", spec("no_such_pkg.mod:Editor"), "edit")
    with pytest.raises(BackendConfigError, match="cannot be loaded"):
        create_backend("editor", spec("examples.plugins.tint_editor:Nope"), "edit")
    with pytest.raises(BackendConfigError, match="lacks edit .*EditBackend"):
        create_backend("editor", spec(f"{__name__}:NotAnEditor"), "edit")
    with pytest.raises(BackendConfigError, match="unknown option"):
        create_backend("editor", spec("examples.plugins.tint_editor:TintEditor", color=[1, 2, 3]), "edit")
    with pytest.raises(BackendConfigError, match="unknown type 'nope'.*package.module:ClassName"):
        create_backend("editor", spec("nope"), "edit")
