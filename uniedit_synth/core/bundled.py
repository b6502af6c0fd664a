"""The pipelines and prompt templates that ship with the package, found through importlib.resources.

The files live at the top of the repository (`pipelines/`, `prompts/`); the wheel build copies them into the
package as `uniedit_synth/_data/{pipelines,prompts}` (setup.py), so an installed package finds them next to its
code. A source checkout (or an editable install) has no `_data/` and uses the top-level folders. A user's own
file overrides either by path: `--pipeline my.yaml`, `prompts_dir:` in the YAML.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent.parent


def _bundled(kind: str) -> Path:
    packaged = resources.files("uniedit_synth") / "_data" / kind
    if packaged.is_dir():
        # a regular (unzipped) install: files() is a real folder, which the prompt loader and globbing need
        return Path(str(packaged))
    return _CHECKOUT / kind


def pipelines_dir() -> Path:
    """The folder of the built-in pipelines (`default.yaml`, `uniedit.yaml`, …)."""
    return _bundled("pipelines")


def prompts_dir() -> Path:
    """The folder of the built-in prompt templates (`classify.txt`, `rewrite/<category>.txt`, …)."""
    return _bundled("prompts")


def builtin_pipelines() -> list[str]:
    return sorted(p.stem for p in pipelines_dir().glob("*.yaml"))
