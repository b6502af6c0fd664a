"""Checks of config values that pydantic's field types cannot say: how deep a config nests, numbers that
are not finite (JSON has no NaN or Infinity, and run.json is JSON), judge thresholds on the score scale and
the shape of a plugin class name."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

#: the judge scores every axis from 1 to 5 (stages/schemas.py); a threshold of 1 or less keeps every score
SCORE_MAX = 5.0
#: a pipeline nests five or six levels (stages.judge.thresholds.coherence); plugin options may go deeper
MAX_DEPTH = 64
_PLUGIN = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def _walk(value: Any, unwrap: Callable[[Any], Any]):
    """(dotted key, value, depth) of every node of a nested dict/list, without recursion (a --set key of
    thousands of levels must not exhaust Python's stack)."""
    stack: list[tuple[str, Any, int]] = [("", value, 0)]
    while stack:
        key, node, depth = stack.pop()
        yield key, node, depth
        if isinstance(node, dict):
            children = [(str(k), v) for k, v in node.items()]
        elif isinstance(node, (list, tuple)):
            children = [(str(i), v) for i, v in enumerate(node)]
        else:
            children = []
        for name, child in reversed(children):
            stack.append((f"{key}.{name}" if key else name, unwrap(child), depth + 1))


def config_problem(raw: Any, unwrap: Callable[[Any], Any] = lambda v: v) -> str | None:
    """The first value of a raw config (or overrides: `unwrap` opens their wrappers) that no pipeline may
    hold, as `key: what is wrong`."""
    for key, node, depth in _walk(unwrap(raw), unwrap):
        if depth > MAX_DEPTH:
            shown = key if len(key) <= 80 else key[:77] + "..."
            return (f"{shown}: nested more than {MAX_DEPTH} levels deep; a pipeline key has a handful of levels "
                    "(e.g. stages.judge.thresholds.coherence)")
        if isinstance(node, float) and not math.isfinite(node):
            return f"{key}: {node} is not a finite number; give a plain number"
    return None


def check_threshold(name: str, value: float) -> float:
    """A judge threshold: finite, from 0 to SCORE_MAX (ValueError naming the scale otherwise)."""
    if not math.isfinite(value) or not 0 <= value <= SCORE_MAX:
        raise ValueError(
            f"{name}: {value} is outside the judge's score scale; give a number from 0 to {SCORE_MAX:g} (scores "
            f"are 1 to {SCORE_MAX:g}, a threshold of 1 or less keeps every score)"
        )
    return value


def check_backend_type(value: str) -> str:
    """A backend `type`: a registry name, or a plugin class written `package.module:ClassName`."""
    if ":" in value and not _PLUGIN.fullmatch(value.strip()):
        raise ValueError(f"{value!r} is not a plugin class name; write it as package.module:ClassName")
    return value.strip() if ":" in value else value
