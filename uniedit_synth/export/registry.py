"""The export format registry: a `--format` name → the writer class that implements it, built in or a plugin.

A format is a registered name (`uniedit-jsonl`, `hf`, `bagel`) or a plugin class `package.module:ClassName`
that subclasses export/base.py `ExportWriter`, imported when an export asks for it.
"""

from __future__ import annotations

from ..core.errors import ExportError
from ..core.plugins import is_plugin, load_target
from .base import ExportWriter

# name -> "module:Class" (imported lazily: an export loads only its own format's modules)
_FORMATS: dict[str, str] = {
    "uniedit-jsonl": "uniedit_synth.export.uniedit_jsonl:UniEditJsonlWriter",
    "hf": "uniedit_synth.export.hf:HfWriter",
    "bagel": "uniedit_synth.export.bagel:BagelWriter",
}


def register_format(name: str, target: str) -> None:
    """Register a format: `register_format("csv", "my_pkg.csv_export:CsvExport")`, then `--format csv`."""
    _FORMATS[name] = target


def known_formats() -> list[str]:
    return list(_FORMATS)


def format_class(fmt: str) -> type[ExportWriter]:
    """The writer class of format `fmt` (a registered name or `package.module:ClassName`)."""
    target = fmt if is_plugin(fmt) else _FORMATS.get(fmt)
    if target is None:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(_FORMATS)} "
                          "(or a plugin class as package.module:ClassName)")
    try:
        cls = load_target(target)
    except (ImportError, AttributeError) as exc:
        hint = " (is its package installed, or on PYTHONPATH?)" if is_plugin(fmt) else ""
        raise ExportError(f"export format {fmt!r} cannot be loaded: {exc}{hint}") from None
    if not (isinstance(cls, type) and issubclass(cls, ExportWriter)):
        raise ExportError(f"export format {fmt!r} is not an export writer (subclass "
                          "uniedit_synth.export.base.ExportWriter)")
    return cls
