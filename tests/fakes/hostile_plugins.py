"""Backend plugins that misbehave on purpose, for the tests and benchmarks/hostile_inputs.py.

`type: tests.fakes.hostile_plugins:HostileText` (or `:HostileEditor`) behaves like the builtin backend of the
offline world, except where `options.fail` says otherwise:

- `init`: the constructor raises a RuntimeError (not a BackendConfigError: a plugin author's bug);
- `start`: `start()` raises;
- `call`: `complete()` / `edit()` raises a ZeroDivisionError, for the tasks in `options.tasks` (default all);
- `junk`: `complete()` / `edit()` returns a string instead of a reply;
- `print`: `start()` prints to stdout (under Ray that line is forwarded to the driver's stdout).
"""

from __future__ import annotations

from typing import Any

from uniedit_synth.backends.base import EditReply, EditRequest, TextReply, TextRequest
from uniedit_synth.core.config import BackendSpec
from uniedit_synth.offline.builtin import BuiltinEditor, BuiltinText

MODES = ("init", "start", "call", "junk", "print")


class _Hostile:
    def _setup(self, spec: BackendSpec) -> BackendSpec:
        options = dict(spec.options)
        self.fail = options.pop("fail", None)
        self.tasks = set(options.pop("tasks", []) or [])
        if self.fail not in (None, *MODES):
            raise ValueError(f"hostile plugin: options.fail must be one of {MODES}")
        if self.fail == "init":
            raise RuntimeError("hostile plugin: constructor exploded")
        return spec.model_copy(update={"options": options})

    async def start(self) -> None:
        if self.fail == "start":
            raise RuntimeError("hostile plugin: could not load weights from /nowhere")
        if self.fail == "print":
            print("\x1b[33mhostile plugin: loading weights, a line on stdout\x1b[0m", flush=True)

    def _misbehaves(self, task: str) -> bool:
        return not self.tasks or task in self.tasks

    def _broken(self, task: str) -> Any:
        if self.fail == "call" and self._misbehaves(task):
            return 1 / 0
        if self.fail == "junk" and self._misbehaves(task):
            return "not a reply"
        return None


class HostileText(_Hostile, BuiltinText):
    def __init__(self, spec: BackendSpec, seed: int = 0) -> None:
        super().__init__(self._setup(spec), seed)

    async def complete(self, request: TextRequest) -> TextReply:
        broken = self._broken(request.task)
        if broken is not None:
            return broken
        return await super().complete(request)


class HostileEditor(_Hostile, BuiltinEditor):
    def __init__(self, spec: BackendSpec, seed: int = 0) -> None:
        super().__init__(self._setup(spec), seed)

    async def edit(self, request: EditRequest) -> EditReply:
        broken = self._broken("edit")
        if broken is not None:
            return broken
        return await super().edit(request)
