"""What run.json records about a run beside its config: the prompt templates the pipeline can use (their
hashes go into the pipeline hash) and the versions of the package and of the libraries it ran with."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

from .. import __version__
from ..core.config import CONFIGURED_STAGES, PipelineConfig


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
