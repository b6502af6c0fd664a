"""Keeping secrets out of what is shown or recorded: API keys in text (`Redactor`), and URLs (`redact_url`).

A URL loses its userinfo (`user:key@`, replaced by `***@`), its query (`?key=…`, `?endpoint_override=…`) and its
fragment; scheme, host, port and path stay, so a message still says where. Keys in text are replaced by `***`:
the values a Redactor was given (a backend's key, every secret-named environment variable for log lines) and
anything shaped like a provider key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

_KEY_SHAPES = re.compile(r"\b(sk-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,})")


class Redactor:
    """Removes secrets (the configured key, and anything shaped like a provider key) from text."""

    def __init__(self, secrets: Iterable[str | None] = ()):
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: object) -> str:
        out = str(text)
        for secret in self._secrets:
            out = out.replace(secret, "***")
        return _KEY_SHAPES.sub("***", out)


def redact_url(url: str | None) -> str | None:
    """`https://user:key@host:8000/v1?token=x` → `https://***@host:8000/v1`; text without `scheme://` as is."""
    if not url or "://" not in url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    netloc = f"***@{host}" if parts.username or parts.password else parts.netloc
    return f"{parts.scheme}://{netloc}{parts.path}"
