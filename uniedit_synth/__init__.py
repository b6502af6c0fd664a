"""uniedit-synth: turn VQA data into reasoning-heavy image-editing training data (Uni-Edit).

The Python API (uniedit_synth/api.py): `synth`, `load_pipeline`, `open_run`. They are imported on first use, so
`import uniedit_synth` stays cheap (Ray workers import the package too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Run", "UniEditError", "load_pipeline", "open_run", "synth"]

if TYPE_CHECKING:
    from .api import Run, load_pipeline, open_run, synth
    from .core.errors import UniEditError


def __getattr__(name: str) -> Any:
    if name in ("Run", "load_pipeline", "open_run", "synth"):
        from . import api

        return getattr(api, name)
    if name == "UniEditError":
        from .core.errors import UniEditError

        return UniEditError
    raise AttributeError(f"module 'uniedit_synth' has no attribute {name!r}")
