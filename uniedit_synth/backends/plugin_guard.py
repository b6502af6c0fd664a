"""The fence around a backend from outside the package: what its code raises or returns becomes the engine's
own errors, so a plugin's bug fails one record (or stops the run with one line), never with a traceback.

- its constructor or `start()` raising (not a UniEditError of its own): a BackendConfigError, so the run stops
  with one line; the driver builds every backend before any worker starts, and a worker starts its backends
  before its first call, so either comes before anything is paid for;
- `complete()` / `edit()` raising anything but the protocol's errors (backends/base.py), or returning
  something other than a TextReply / EditReply: PluginFailed, which the stage turns into that record's
  failure reason (`edit_failed`, `judge_failed`, …) with the message in `reject_detail`. It is never retried
  and never cached: a fixed plugin answers the same request on a rerun.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from ..core.errors import BackendConfigError, UniEditError
from .base import Backend, BackendError, EditReply, EditRequest, TextReply, TextRequest


class PluginFailed(BackendError):
    """A plugin backend's call raised an unexpected exception or returned junk: that record's stage failure."""


def describe(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message (at most 300 characters)."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def is_foreign(cls: type) -> bool:
    """A class that is not uniedit-synth's own (a `package.module:Class` plugin, or one `register`ed)."""
    return not (cls.__module__ or "").startswith("uniedit_synth.")


def construct(cls: type, name: str, type_name: str, *args: Any, **kwargs: Any) -> Any:
    """`cls(*args, **kwargs)` of a plugin class, its failure a one-line BackendConfigError."""
    try:
        return cls(*args, **kwargs)
    except UniEditError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a plugin's constructor raises is a config error
        raise BackendConfigError(
            f"backend '{name}' ({type_name}) cannot be created: its constructor raised {describe(exc)}; "
            "check the backend's options, or the plugin"
        ) from None


def optional(plugin: Any, member: str) -> Any:
    """A plugin's (class's or instance's) own optional `member`, else the default of backends/base.py Backend."""
    return getattr(plugin, member, getattr(Backend, member))


class PluginGuard(Backend):
    """A plugin backend with its calls fenced (see the module docstring); every other attribute is the
    plugin's own (`provider`, …), its optional members (Backend's) the plugin's or Backend's defaults."""

    def __init__(self, backend: Any, name: str, type_name: str):
        self._backend = backend
        self._name = name
        self._type = type_name

    def __getattr__(self, attr: str) -> Any:
        if attr == "_backend":  # not set yet (a copy being built): no endless lookup
            raise AttributeError(attr)
        return getattr(self._backend, attr)

    @property
    def wrapped(self) -> Any:
        return self._backend

    @property
    def spec(self) -> Any:  # type: ignore[override]
        return optional(self._backend, "spec")

    @property
    def reads_context(self) -> bool:  # type: ignore[override]
        return bool(optional(self._backend, "reads_context"))

    @property
    def replica_runner(self) -> str | None:  # type: ignore[override]
        return optional(self._backend, "replica_runner")

    @property
    def rate_limited(self) -> bool:
        own = getattr(self._backend, "rate_limited", None)
        return super().rate_limited if own is None else bool(own)

    def preflight(self, engine_kind: str) -> None:
        check = getattr(self._backend, "preflight", None)
        if callable(check):
            check(engine_kind)

    def batch_route(self, capability: str) -> Any:
        route = getattr(self._backend, "batch_route", None)
        return route(capability) if callable(route) else None

    async def aclose(self) -> None:
        await self._backend.aclose()

    async def start(self) -> None:
        start = getattr(self._backend, "start", None)
        if not callable(start):
            return
        try:
            await start()
        except UniEditError:
            raise
        except Exception as exc:  # noqa: BLE001 - a plugin that cannot load stops the run, in one line
            raise BackendConfigError(
                f"backend '{self._name}' ({self._type}): start() failed: {describe(exc)}; nothing was sent "
                "(fix the plugin, its options or its model files, then run the same command again)"
            ) from None

    async def complete(self, request: TextRequest) -> TextReply:
        return self._checked("complete", await self._call("complete", request), TextReply)

    async def edit(self, request: EditRequest) -> EditReply:
        reply = self._checked("edit", await self._call("edit", request), EditReply)
        if not reply.image:
            raise PluginFailed(f"{self._where('edit')} returned an EditReply without image bytes")
        return reply

    async def _call(self, method: str, request: BaseModel) -> Any:
        try:
            return await getattr(self._backend, method)(request)
        except (BackendError, UniEditError, asyncio.TimeoutError):
            raise  # the protocol's own errors: retried, rejected or stopping the run as for any backend
        except Exception as exc:  # noqa: BLE001 - a plugin's bug is its record's failure, not the run's
            raise PluginFailed(f"{self._where(method)} raised {describe(exc)}") from None

    def _checked(self, method: str, reply: Any, expected: type[BaseModel]) -> Any:
        if isinstance(reply, expected):
            return reply
        article = "an" if expected.__name__[0] in "AEIOU" else "a"
        raise PluginFailed(f"{self._where(method)} returned {type(reply).__name__}, not {article} {expected.__name__}")

    def _where(self, method: str) -> str:
        return f"plugin {self._type}.{method}() of backend '{self._name}'"
