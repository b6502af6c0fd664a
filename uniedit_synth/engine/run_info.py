"""What run.json records about a run beside its config: the prompt templates the pipeline can use (their
hashes go into the pipeline hash), the versions of the package and of the libraries it ran with, and what a run
pins for life when it is created (`scene_png`: how the offline world's scenes are encoded)."""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Any

from .. import __version__
from ..core.config import CONFIGURED_STAGES, PipelineConfig
from ..offline.render import PNG_NEW, PNG_PILLOW
from ..run.store import RunDir
from ..sources.scenes import pin_scene_png

__all__ = ["pin_scene_png", "prompt_files", "scene_png", "versions"]


def prompt_files(config: PipelineConfig) -> list[str]:
    """Every template the pipeline's stages can use (a `{category}` template expands over the files that exist)."""
    names: list[str] = []
    for definition in CONFIGURED_STAGES:
        template = getattr(getattr(config.stages, definition.name), "prompt", None)
        if not template:
            continue
        if "{category}" in template:
            folder = (config.prompts_path() / template).parent
            pattern = Path(template).name.replace("{category}", "*")
            rel_folder = Path(template).parent
            names += [str(rel_folder / p.name) for p in sorted(folder.glob(pattern))]
        else:
            names.append(template)
    rewrite = config.stages.rewrite
    if rewrite.examples and rewrite.examples_per_record:  # the exemplar pools are part of the rewrite prompt
        if "{category}" in rewrite.examples:
            pattern = Path(rewrite.examples).name.replace("{category}", "*")
            folder = (config.prompts_path() / rewrite.examples).parent
            names += [str(Path(rewrite.examples).parent / p.name) for p in sorted(folder.glob(pattern))]
        else:
            names.append(rewrite.examples)
    if config.stages.rewrite.reasoning == "model":
        names.append(config.stages.rewrite.reasoning_prompt)
    return names


def versions() -> dict[str, str]:
    out = {"uniedit-synth": __version__, "python": platform.python_version()}
    for name in ("ray", "pyarrow", "pydantic", "openai", "google.genai", "datasets", "PIL"):
        module = sys.modules.get(name)
        if module is not None:
            out[name] = getattr(module, "__version__", "?")
    return out


def scene_png(run_dir: RunDir, previous: dict[str, Any] | None, config: PipelineConfig) -> str:
    """run.json `scene_png`: the PNG encoding of the run's offline-world scenes (offline/render.py), fixed when the
    run is created, since its cache keys hash the source images' bytes (`pin_scene_png` gives it to the source).

    A run made before the field existed (its run.json has none, or is unreadable, or there is a manifest without
    one) keeps Pillow's bytes for every record it renders, so its resumed and rerun shards find their cached
    replies. A new run gets the fast encoding, unless its editor is the builtin one: that editor draws its flaws
    from the source image's bytes (offline/builtin.py), so the offline world keeps Pillow's bytes and its rows
    and data-quality figures stay those of every release before."""
    if previous is not None and previous.get("scene_png"):
        return str(previous["scene_png"])
    editor = config.backends.get(config.stages.edit.backend)
    if run_dir.is_run() or (editor is not None and editor.type == "builtin"):
        return PNG_PILLOW
    return PNG_NEW
