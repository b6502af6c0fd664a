"""The source registry: which Source class opens a `source.spec`, built in or a plugin.

`source.type` names the class: a registered name (`scenes`, `hf`, `rows`, `parquet`) or a plugin class
`package.module:ClassName` (imported by the driver and by every worker, like a backend plugin: the module must
be importable there). Without `source.type`, the registered classes are asked in order whether they open the
spec (`Source.opens`) and the first that does is used. A plugin class subclasses sources/base.py `Source`
(examples/plugins/sidecar_source.py is a small one).
"""

from __future__ import annotations

from ..core.config import SourceSpec
from ..core.errors import SourceError
from ..core.plugins import is_plugin, load_target
from .base import Source

# name -> "module:Class", in the order specs are matched (imported lazily: only what a spec needs, in order)
_SOURCES: dict[str, str] = {
    "scenes": "uniedit_synth.sources.scenes:ScenesSource",
    "hf": "uniedit_synth.sources.hf:HFSource",  # before the folders: a saved data set is a folder too
    "rows": "uniedit_synth.sources.files:RowFileSource",
    "parquet": "uniedit_synth.sources.files:ParquetSource",
    # editing benchmarks in their own folder layouts (sources/bench_layouts.py): read by --against and
    # source.decontaminate; last, so they never take a spec another class opens
    "imgedit-bench": "uniedit_synth.sources.bench_layouts:ImgEditBench",
    "kris-bench": "uniedit_synth.sources.bench_layouts:KrisBench",
    "risebench": "uniedit_synth.sources.bench_layouts:RiseBench",
}


def register_source(name: str, target: str) -> None:
    """Register a source class (`register_source("npz", "my_pkg.npz:NpzSource")`): usable as
    `source.type: npz`, and asked (after the built-in ones) whether it opens a spec."""
    _SOURCES[name] = target


def known_sources() -> list[str]:
    return list(_SOURCES)


def load_source_class(type_name: str) -> type[Source]:
    """The class `source.type` names (a registered name or `package.module:ClassName`)."""
    target = type_name if is_plugin(type_name) else _SOURCES.get(type_name)
    if target is None:
        raise SourceError(f"unknown source.type '{type_name}' (known: {', '.join(_SOURCES)}, or a plugin class "
                          "as package.module:ClassName)")
    try:
        cls = load_target(target)
    except (ImportError, AttributeError) as exc:
        hint = " (is its package installed, or on PYTHONPATH, on every node?)" if is_plugin(type_name) else ""
        raise SourceError(f"source.type '{type_name}' cannot be loaded: {exc}{hint}") from None
    if not (isinstance(cls, type) and issubclass(cls, Source)):
        raise SourceError(f"source.type '{type_name}' is not a Source class (subclass uniedit_synth.sources.base."
                          "Source and give it the classmethods opens, open and image_root_of)")
    return cls


def source_classes(kind: type[Source] = Source) -> list[tuple[str, type[Source]]]:
    """(name, class) of the registered classes that subclass `kind`, in the registry's order."""
    classes = [(name, load_source_class(name)) for name in _SOURCES]
    return [(name, cls) for name, cls in classes if issubclass(cls, kind)]


def source_class(spec: SourceSpec) -> type[Source] | None:
    """The class that opens `spec`: the one `source.type` names, else the first registered class that says it
    opens `source.spec`; None when none does."""
    if spec.type:
        return load_source_class(spec.type)
    text = (spec.spec or "").strip()
    for name in _SOURCES:
        cls = load_source_class(name)
        if cls.opens(text):
            return cls
    return None
