"""Unit checks behind issue 30 items 6, 8 and 9: the plugin fence, the pixel bound of fingerprints, the
read-only run activity, shell quoting and bidi escaping on the terminal."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from uniedit_synth.backends.base import (
    BadRequest,
    EditReply,
    EditRequest,
    RateLimited,
    TextReply,
    TextRequest,
)
from uniedit_synth.backends.plugin_guard import PluginFailed, PluginGuard
from uniedit_synth.backends.registry import create_backend
from uniedit_synth.core.config import BackendSpec
from uniedit_synth.core.errors import BackendConfigError
from uniedit_synth.core.terminal import shell_quote, terminal_safe
from uniedit_synth.method.fingerprint import ImageUnreadable, fingerprint_image


def png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


# -- the plugin fence --------------------------------------------------------------------------------------
class Plugin:
    provider = "plug"

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.spec = BackendSpec(type="x.y:Plugin", model="m")

    async def complete(self, request):
        return self.behaviour()

    async def edit(self, request):
        return self.behaviour()


def raise_(exc):
    def go():
        raise exc
    return go


TEXT = TextRequest(task="judge", model="m", prompt="p")
EDIT = EditRequest(model="m", instruction="i", image=b"x")


@pytest.mark.parametrize("behaviour, needle", [
    (raise_(KeyError("k")), "raised KeyError: 'k'"),
    (raise_(TypeError("bad\nsecond line")), "raised TypeError: bad"),
    (lambda: None, "returned NoneType, not a TextReply"),
    (lambda: {"data": {}}, "returned dict, not a TextReply"),
])
def test_a_plugins_failed_call_is_plugin_failed(behaviour, needle):
    guard = PluginGuard(Plugin(behaviour), "judge-backend", "x.y:Plugin")
    with pytest.raises(PluginFailed) as info:
        asyncio.run(guard.complete(TEXT))
    assert needle in str(info.value) and "\n" not in str(info.value) and "'judge-backend'" in str(info.value)


@pytest.mark.parametrize("behaviour, needle", [
    (lambda: "junk", "returned str, not an EditReply"),
    (lambda: EditReply(image=b""), "without image bytes"),
])
def test_a_plugins_junk_edit_is_plugin_failed(behaviour, needle):
    with pytest.raises(PluginFailed, match=needle):
        asyncio.run(PluginGuard(Plugin(behaviour), "ed", "x.y:Plugin").edit(EDIT))


@pytest.mark.parametrize("exc", [RateLimited("429", retry_after=1), BadRequest("400"), asyncio.TimeoutError(),
                                 BackendConfigError("its own one-line error")])
def test_the_protocols_own_errors_pass_through(exc):
    with pytest.raises(type(exc)):
        asyncio.run(PluginGuard(Plugin(raise_(exc)), "b", "x.y:Plugin").complete(TEXT))


def test_a_good_reply_and_the_plugins_attributes_pass_through():
    reply = TextReply(data={"ok": 1})
    guard = PluginGuard(Plugin(lambda: reply), "b", "x.y:Plugin")
    assert asyncio.run(guard.complete(TEXT)) is reply
    assert guard.provider == "plug" and guard.spec.model == "m"


def test_a_plugin_start_failure_is_a_config_error_and_a_missing_start_is_fine():
    class Starts(Plugin):
        async def start(self):
            raise OSError("weights not found")

    with pytest.raises(BackendConfigError, match=r"backend 'b' \(x.y:Plugin\): start\(\) failed: OSError"):
        asyncio.run(PluginGuard(Starts(None), "b", "x.y:Plugin").start())
    asyncio.run(PluginGuard(Plugin(None), "b", "x.y:Plugin").start())


def test_only_foreign_backends_are_fenced():
    builtin = create_backend("t", BackendSpec(type="builtin", model="m"), "text")
    plugin = create_backend("e", BackendSpec(type="tests.fakes.hostile_plugins:HostileEditor", model="m"), "edit")
    assert not isinstance(builtin, PluginGuard) and isinstance(plugin, PluginGuard)
    with pytest.raises(BackendConfigError, match="constructor raised RuntimeError"):
        create_backend("e", BackendSpec(type="tests.fakes.hostile_plugins:HostileEditor", model="m",
                                        options={"fail": "init"}), "edit")


# -- fingerprints under a pixel bound ------------------------------------------------------------------------
def test_fingerprint_refuses_an_image_over_the_bound_before_decoding():
    data = png((100, 80))
    with pytest.raises(ImageUnreadable, match="8,000 pixels, over input.max_pixels"):
        fingerprint_image(data, max_pixels=7_999)
    assert fingerprint_image(data, max_pixels=8_000) == fingerprint_image(data)
    with pytest.raises(ImageUnreadable, match="over input.max_pixels"):
        fingerprint_image(Image.new("RGB", (100, 80)), max_pixels=10)


def test_a_benchmark_fifo_is_refused(tmp_path: Path):
    from uniedit_synth.sources.benchmarks import BenchmarkError, load_benchmark

    os.mkfifo(tmp_path / "b.jsonl")
    with pytest.raises(BenchmarkError, match="not a regular file"):
        load_benchmark(str(tmp_path / "b.jsonl"))


# -- run activity (read-only) ---------------------------------------------------------------------------------
def make_run(tmp_path: Path, status: str, lock: dict | None) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"pipeline_hash": "h", "status": status}))
    (run / "manifest.jsonl").write_text("")
    if lock is not None:
        (run / ".lock").write_text(json.dumps(lock))
    return run


@pytest.mark.parametrize("status, lock, in_progress, note", [
    ("running", {"pid": os.getpid(), "host": socket.gethostname()}, True, "still being written"),
    ("running", {"pid": 4_000_000, "host": socket.gethostname()}, False, "did not finish"),
    ("running", {"pid": 1, "host": "elsewhere", "heartbeat": 0}, False, "did not finish"),
    ("running", {"pid": 1, "host": "elsewhere", "heartbeat": 10**12}, True, "still being written"),
    ("finished", None, False, None),
    ("interrupted", None, False, None),
])
def test_run_activity(tmp_path: Path, status, lock, in_progress, note):
    from uniedit_synth.run.activity import run_activity
    from uniedit_synth.run.store import RunDir

    run = make_run(tmp_path, status, lock)
    activity = run_activity(RunDir(run))
    assert activity.in_progress is in_progress and activity.status == status
    assert (activity.note is None) if note is None else (note in activity.note)
    assert (run / ".lock").exists() == (lock is not None)  # read-only: a stale lock stays


# -- what the terminal shows -----------------------------------------------------------------------------------
@pytest.mark.parametrize("word", ["plain", "with space", "it's", "$HOME `x` \\ \"q\"", "new\nline", "tab\there",
                                  "esc\x1b[31m", "rtl\u202eexe.txt", "ünïcode"])
def test_shell_quote_round_trips_through_bash(word: str):
    quoted = shell_quote(word)
    assert "\n" not in quoted and "\x1b" not in quoted and "\u202e" not in quoted
    out = subprocess.run(["bash", "-c", f"printf '%s' {quoted}"], capture_output=True, check=True).stdout
    assert out.decode() == word


def test_terminal_safe_escapes_bidi_controls():
    assert terminal_safe("invoice\u202egnp.exe") == "invoice\\u202egnp.exe"
    assert terminal_safe("a\u2066b\u2069\u200f") == "a\\u2066b\\u2069\\u200f"
    assert terminal_safe("عربي text") == "عربي text"  # right-to-left letters are text, not controls
