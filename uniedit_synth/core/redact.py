"""Making URLs safe to show or record: the one redactor for base URLs and output locations.

A URL loses its userinfo (`user:key@`, replaced by `***@`), its query (`?key=…`, `?endpoint_override=…`) and its
fragment; scheme, host, port and path stay, so a message still says where. (API keys in text are the job of
backends/replies.py Redactor, which knows the key values.)
"""

from __future__ import annotations

from urllib.parse import urlsplit


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
