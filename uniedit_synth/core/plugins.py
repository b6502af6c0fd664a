"""Classes named as `package.module:Name`: the one way the registries (backends, sources, exports), the stage
table and the model replicas turn such a name into the object it names."""

from __future__ import annotations

import importlib
from typing import Any


def is_plugin(type_name: str) -> bool:
    """Whether a `type` names a class by path (`package.module:Name`) rather than by a registered name."""
    return ":" in type_name


def load_target(target: str) -> Any:
    """The object `package.module:Name` names; ImportError or AttributeError when it is not there (a module
    that fails while it is imported raises its own exception)."""
    module_name, _, name = target.partition(":")
    return getattr(importlib.import_module(module_name), name)
