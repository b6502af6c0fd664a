"""The backend registry: a backend `type` from the pipeline YAML → the class that implements it.

`type` is a built-in name (`builtin`, `openai`, `openai-compatible`, `gemini`, `diffusers` for edits) or a plugin class
`package.module:ClassName`, imported by the driver (to check the config) and by every worker (Ray actors import
it on their node, so the module must be installed there, like uniedit-synth itself). A plugin class follows
the TextBackend or EditBackend protocol of backends/base.py.
"""

from __future__ import annotations

from typing import Any

from ..core.config import BackendSpec
from ..core.errors import BackendConfigError
from ..core.plugins import is_plugin, load_target
from .base import EditBackend, TextBackend, protocol_methods
from .plugin_guard import PluginGuard, construct, describe, is_foreign

# type name -> "module:Class" (imported lazily, so the offline path never imports the SDKs)
_TEXT: dict[str, str] = {
    "builtin": "uniedit_synth.offline.builtin:BuiltinText",
    "openai": "uniedit_synth.backends.openai_backend:OpenAIText",
    "openai-compatible": "uniedit_synth.backends.openai_backend:OpenAICompatibleText",
    "gemini": "uniedit_synth.backends.gemini_backend:GeminiText",
}
_EDIT: dict[str, str] = {
    "builtin": "uniedit_synth.offline.builtin:BuiltinEditor",
    "openai": "uniedit_synth.backends.openai_backend:OpenAIEditor",
    "openai-compatible": "uniedit_synth.backends.openai_backend:OpenAIEditor",
    "gemini": "uniedit_synth.backends.gemini_backend:GeminiEditor",
    "diffusers": "uniedit_synth.backends.diffusers_backend:DiffusersEditor",
}
_CAPABILITIES = {"text": _TEXT, "edit": _EDIT}


def register(capability: str, type_name: str, target: str) -> None:
    """Register a third-party backend: `register("text", "mine", "my_pkg.mod:MyText")`."""
    _CAPABILITIES[capability][type_name] = target


_PROTOCOLS = {"text": TextBackend, "edit": EditBackend}


def backend_class(name: str, spec: BackendSpec, capability: str) -> type:
    """The class for backend `name`: from the registry, or the plugin `package.module:ClassName`."""
    table = _CAPABILITIES[capability]
    target = spec.type if is_plugin(spec.type) else table.get(spec.type)
    if target is None:
        raise BackendConfigError(
            f"backend '{name}': unknown type '{spec.type}' for {capability} "
            f"(known: {', '.join(sorted(table))}, or a plugin class as package.module:ClassName)"
        )
    try:
        cls = load_target(target)
    except (ImportError, AttributeError) as exc:
        hint = " (is its package installed, or on PYTHONPATH, on every node?)" if is_plugin(spec.type) else ""
        raise BackendConfigError(f"backend '{name}' ({spec.type}) cannot be loaded: {exc}{hint}") from None
    except Exception as exc:  # noqa: BLE001 - a plugin module that fails while it is imported
        raise BackendConfigError(f"backend '{name}' ({spec.type}) cannot be loaded: importing it raised "
                                 f"{describe(exc)}") from None
    protocol = _PROTOCOLS[capability]
    missing = [m for m in protocol_methods(protocol) if not callable(getattr(cls, m, None))]
    if missing:
        raise BackendConfigError(
            f"backend '{name}' ({spec.type}) cannot serve {capability} calls: it lacks {', '.join(missing)} "
            f"(see the {protocol.__name__} protocol in uniedit_synth/backends/base.py)"
        )
    return cls


def create_backend(name: str, spec: BackendSpec, capability: str, **kwargs: Any) -> Any:
    """Instantiate backend `name` (its spec from the YAML) for `capability` ("text" or "edit").

    Construction is cheap by contract (options, API key): the driver builds every backend once to check the
    config. Loading a model happens in the backend's `start()`, which only workers call."""
    cls = backend_class(name, spec, capability)
    if not is_foreign(cls):
        backend = cls(spec, **kwargs)
    else:  # a plugin's failures are fenced: one line for the run, or its record's reject (plugin_guard.py)
        backend = PluginGuard(construct(cls, name, spec.type, spec, **kwargs), name, spec.type)
    if not isinstance(getattr(backend, "provider", None), str):
        raise BackendConfigError(f"backend '{name}' ({spec.type}) has no `provider` name (a str attribute)")
    return backend
