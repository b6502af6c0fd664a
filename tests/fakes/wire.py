"""Fast paths for the fakes' HTTP wire work: request headers and multipart/form-data bodies, each parsed to
exactly what the standard library's email-based parsers give, falling back to those parsers for anything
outside the plain shape the SDKs send.

Why: the fakes run on the same cores as the engine they serve in benchmarks (benchmarks/peers.py), and the
stdlib's email parser costs ~3 ms for one 10 kB image upload and ~0.3 ms for a request's headers: CPU a real
provider would not take from the client. Results must stay identical (tests compare what the fakes saw and
replied), so each fast path accepts only input it provably parses the same way, else defers to the stdlib.
"""

from __future__ import annotations

import email.parser
import email.policy
import http.client
import re
from collections.abc import Iterator
from typing import Any

#: a header line the email parser reads as a plain one-line `Name: value` (no folding, no odd characters)
_HEADER_LINE = re.compile(rb"([\x21-\x39\x3b-\x7e]+):([^\r\n]*)\r?\n")
#: `form-data; name="..."[; filename="..."]` with nothing that needs quoting rules or RFC 2231 decoding
_DISPOSITION = re.compile(r'form-data; name="([^"\\;%*\x00-\x1f\x7f-\uffff]*)"(?:; filename="([^"\\;%*\x00-\x1f\x7f-\uffff]*)")?')
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_CONTENT_TYPE = re.compile(rf"({_TOKEN})/({_TOKEN})")
_BOUNDARY = re.compile(r"multipart/form-data; boundary=([0-9A-Za-z]{1,70})")


class FastHeaders:
    """Request headers as `http.client.HTTPMessage` exposes them to the handler: `get` (first value, any case),
    `items` (every header in order, as sent), `in`, `[]` (None when absent), `get_all`."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs
        self._first: dict[str, str] = {}
        for name, value in pairs:
            self._first.setdefault(name.lower(), value)

    def get(self, name: str, failobj: Any = None) -> Any:
        return self._first.get(name.lower(), failobj)

    def __getitem__(self, name: str) -> str | None:
        return self._first.get(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def get_all(self, name: str, failobj: Any = None) -> Any:
        found = [value for key, value in self._pairs if key.lower() == name.lower()]
        return found or failobj

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def keys(self) -> list[str]:
        return [key for key, _ in self._pairs]

    def values(self) -> list[str]:
        return [value for _, value in self._pairs]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._pairs)


def parse_header_lines(lines: list[bytes], message_class: type) -> Any:
    """The header block `lines` (as `http.client._read_headers` returns them, blank line last) as FastHeaders,
    or as `message_class` through the email parser (what `http.client.parse_headers` does) when any line is
    not a plain one-line header."""
    pairs: list[tuple[str, str]] = []
    for line in lines[:-1]:
        match = _HEADER_LINE.fullmatch(line)
        if match is None:
            text = b"".join(lines).decode("iso-8859-1")
            return email.parser.Parser(_class=message_class).parsestr(text)
        # compat32's header_source_parse: the value loses leading blanks and its line ending, nothing else
        pairs.append((match.group(1).decode("ascii"), match.group(2).decode("iso-8859-1").lstrip(" \t")))
    if lines and lines[-1] not in (b"\r\n", b"\n"):  # a header block cut short by EOF: let the stdlib judge
        text = b"".join(lines).decode("iso-8859-1")
        return email.parser.Parser(_class=message_class).parsestr(text)
    return FastHeaders(pairs)


def read_headers(rfile: Any) -> list[bytes]:
    """The request's header lines (limits and errors as `http.client.parse_headers`)."""
    return http.client._read_headers(rfile)  # noqa: SLF001 - the stdlib's own reader, for identical limits


def parse_multipart_email(content_type: str, raw: bytes) -> dict[str, Any]:
    """multipart/form-data through the email parser (the reference; anything the fast path declines)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
    )
    fields: dict[str, Any] = {}
    files: dict[str, list[dict[str, Any]]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        data = part.get_payload(decode=True) or b""
        if filename is not None:
            files.setdefault(name, []).append(
                {"filename": filename, "content_type": part.get_content_type(), "data": data}
            )
        else:
            fields[name] = data.decode("utf-8", "replace")
    return {"fields": fields, "files": files}


def _fast_multipart(content_type: str, raw: bytes) -> dict[str, Any] | None:
    """The plain shape httpx (the SDKs' client) sends: `--B CRLF part (CRLF --B CRLF part)* CRLF --B-- CRLF`,
    each part `Content-Disposition: form-data; name=..[; filename=..]` (+ `Content-Type`) then its bytes.
    None for anything else."""
    found = _BOUNDARY.fullmatch(content_type)
    if found is None:
        return None
    delimiter = b"--" + found.group(1).encode("ascii")
    closing = b"\r\n" + delimiter + b"--\r\n"
    if not raw.startswith(delimiter + b"\r\n") or not raw.endswith(closing):
        return None
    inner = raw[len(delimiter) + 2 : -len(closing)]
    # the email parser ends a part at any line that starts with the delimiter (after CR, LF or CRLF, with
    # blanks or "--" after it): every delimiter must be a plain CRLF-delimited separator
    if inner.count(delimiter) != inner.count(b"\r\n" + delimiter + b"\r\n"):
        return None
    fields: dict[str, Any] = {}
    files: dict[str, list[dict[str, Any]]] = {}
    for part in inner.split(b"\r\n" + delimiter + b"\r\n"):
        head, sep, data = part.partition(b"\r\n\r\n")
        if not sep or not head:
            return None
        disposition = kind = None
        for line in head.split(b"\r\n"):
            match = _HEADER_LINE.fullmatch(line + b"\r\n")
            if match is None:
                return None
            name = match.group(1).lower()
            value = match.group(2).decode("ascii", "strict").strip(" \t") if match.group(2).isascii() else None
            if value is None or name in (b"content-transfer-encoding", b"content-type" if kind else b"-",
                                         b"content-disposition" if disposition else b"-"):
                return None
            if name == b"content-disposition":
                disposition = value
            elif name == b"content-type":
                kind = value
        parsed = _DISPOSITION.fullmatch(disposition or "")
        if parsed is None:
            return None
        content = "text/plain"
        if kind is not None:
            typed = _CONTENT_TYPE.fullmatch(kind)
            if typed is None or typed.group(1).lower() in ("multipart", "message"):
                return None
            content = kind.lower()
        field, filename = parsed.group(1), parsed.group(2)
        if filename is not None:
            files.setdefault(field, []).append({"filename": filename, "content_type": content, "data": data})
        else:
            fields[field] = data.decode("utf-8", "replace")
    return {"fields": fields, "files": files}


def parse_multipart(content_type: str, raw: bytes) -> dict[str, Any]:
    """multipart/form-data → {"fields": {...}, "files": {name: [{filename, content_type, data}]}}, the same
    as the email parser gives (fast for the SDKs' plain shape, the email parser for the rest)."""
    fast = _fast_multipart(content_type, raw)
    return fast if fast is not None else parse_multipart_email(content_type, raw)
