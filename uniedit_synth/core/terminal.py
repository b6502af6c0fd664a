"""What reaches the terminal: control characters escaped (ids and paths from a data set can hold ANSI/OSC
escapes) and secrets redacted (SDK and HTTP-library debug lines print headers, where a key can appear)."""

from __future__ import annotations

import builtins
import logging
import os
import re
from typing import Any

from .redact import Redactor

#: C0 and C1 control characters except newline and tab: ESC starts ANSI/OSC sequences, CR rewrites a line
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """`text` with every control character but newline and tab shown as an escape (`\\x1b`), never acted on."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


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
