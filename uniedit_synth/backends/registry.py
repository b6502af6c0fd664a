"""The backend registry: a backend `type` name from the pipeline YAML → the class that implements it."""

from __future__ import annotations

import importlib
from typing import Any

from ..config import BackendSpec
from ..errors import BackendConfigError

# type name -> "module:Class" (imported lazily, so the offline path never imports the SDKs)
_TEXT: dict[str, str] = {
    "builtin": "uniedit_synth.backends.builtin:BuiltinText",
    "openai": "uniedit_synth.backends.openai_backend:OpenAIText",
    "openai-compatible": "uniedit_synth.backends.openai_backend:OpenAICompatibleText",
    "gemini": "uniedit_synth.backends.gemini_backend:GeminiText",
}
_EDIT: dict[str, str] = {
    "builtin": "uniedit_synth.backends.builtin:BuiltinEditor",
    "openai": "uniedit_synth.backends.openai_backend:OpenAIEditor",
    "openai-compatible": "uniedit_synth.backends.openai_backend:OpenAIEditor",
    "gemini": "uniedit_synth.backends.gemini_backend:GeminiEditor",
}
_CAPABILITIES = {"text": _TEXT, "edit": _EDIT}


def register(capability: str, type_name: str, target: str) -> None:
    """Register a third-party backend: `register("text", "mine", "my_pkg.mod:MyText")`."""
    _CAPABILITIES[capability][type_name] = target


def known_types(capability: str) -> list[str]:
    return sorted(_CAPABILITIES[capability])


def create_backend(name: str, spec: BackendSpec, capability: str, **kwargs: Any) -> Any:
    """Instantiate backend `name` (its spec from the YAML) for `capability` ("text" or "edit")."""
    table = _CAPABILITIES[capability]
    target = table.get(spec.type)
    if target is None:
        raise BackendConfigError(
            f"backend '{name}': unknown type '{spec.type}' for {capability} "
            f"(known: {', '.join(sorted(table))})"
        )
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise BackendConfigError(f"backend '{name}' ({spec.type}) cannot be loaded: {exc}") from None
    return cls(spec, **kwargs)
