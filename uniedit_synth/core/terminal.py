"""What reaches the terminal: control characters escaped (ids and paths from a data set can hold ANSI/OSC
escapes, or bidi overrides that show text reversed), secrets redacted (SDK and HTTP-library debug lines print
headers, where a key can appear), and paths in printed commands shell-quoted."""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import re
import shlex
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from .redact import Redactor

#: C0 and C1 control characters except newline and tab: ESC starts ANSI/OSC sequences, CR rewrites a line
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: Unicode bidi controls: an id with a right-to-left override (U+202E) prints `invoice\u202egnp.exe` as
#: "invoiceexe.png"; isolates and marks can reorder a line just as well
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def terminal_safe(text: str) -> str:
    """`text` with every control character but newline and tab shown as an escape (`\\x1b`, `\\u202e`),
    never acted on."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return _BIDI.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def shell_quote(word: str) -> str:
    """`word` as one shell word that bash or zsh reads back unchanged: `shlex.quote`, or the `$'...'` form
    when it holds a newline or another control character (which would break the printed line, or act)."""
    if not (_CONTROL.search(word) or _BIDI.search(word) or "\n" in word or "\t" in word):
        return shlex.quote(word)
    escapes = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\t": "\\t"}

    def one(ch: str) -> str:
        if ch in escapes:
            return escapes[ch]
        if _CONTROL.fullmatch(ch) or _BIDI.fullmatch(ch):
            return f"\\x{ord(ch):02x}" if ord(ch) < 0x80 else f"\\u{ord(ch):04x}"
        return ch

    return "$'" + "".join(one(ch) for ch in word) + "'"


@contextlib.contextmanager
def json_stdout() -> Iterator[TextIO]:
    """A stream onto the real stdout for JSON events, while everything else written to stdout (file
    descriptor 1 and `sys.stdout`: Ray forwarding its workers' output in colour, a plugin's print, a library's
    banner, and the subprocesses started meanwhile) goes to stderr: `--log-format json` promises JSON lines."""
    sys.stdout.flush()
    events = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield events
    finally:
        sys.stdout.flush()
        events.close()
        os.dup2(saved, 1)
        os.close(saved)


def safe_print(*values: Any, **kwargs: Any) -> None:
    """`print`, with control characters escaped."""
    builtins.print(*(terminal_safe(str(v)) for v in values), **kwargs)


def secret_env_values() -> list[str]:
    """Values of environment variables that hold secrets by their name (`*KEY*`, `*TOKEN*`, `*SECRET*`,
    `*PASSWORD*`): every key a backend can read (api_key_env names one of them)."""
    names = ("KEY", "TOKEN", "SECRET", "PASSWORD")
    return [value for name, value in os.environ.items()
            if any(part in name.upper() for part in names) and len(value.strip()) >= 8]


class TerminalLogFilter(logging.Filter):
    """Redacts secrets from, and escapes control characters in, every log record that reaches a handler it
    sits on, whatever logger made it."""

    def __init__(self) -> None:
        super().__init__()
        self._redact = Redactor(secret_env_values())

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's own problem
            return True
        clean = terminal_safe(self._redact(message))
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = terminal_safe(self._redact(logging.Formatter().formatException(record.exc_info)))
        return True


def install_log_filter() -> None:
    """Put a TerminalLogFilter on every handler of the root logger (once)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, TerminalLogFilter) for f in handler.filters):
            handler.addFilter(TerminalLogFilter())
