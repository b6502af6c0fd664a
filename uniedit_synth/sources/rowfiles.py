"""Byte-level reading of row files — JSONL lines, JSON arrays (incrementally, never the whole file),
CSV records — each row with the byte offset it starts at, so a row can be read again by seeking.

Text is decoded as UTF-8 with `surrogateescape`: undecodable bytes survive as lone surrogates, which the
row mapper turns into an invalid record instead of an exception.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from ..core.errors import SourceError

_WHITESPACE = b" \t\r\n"
_BOM = b"\xef\xbb\xbf"
_FIRST_WINDOW = 16 * 1024
_READ_SIZE = 1024 * 1024
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class BadRow:
    """A row that could not be parsed; it still becomes a record (with `invalid` set)."""

    detail: str
    raw: bytes


def decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


# ------------------------------------------------------------------------------------------- JSONL


def iter_jsonl(fh: IO[bytes]) -> Iterator[tuple[int, Any]]:
    """(offset, row or BadRow) for every non-blank line, from the current position."""
    offset = fh.tell()
    line_number = 0
    for line in fh:
        line_number += 1
        start = offset
        offset += len(line)
        if not line.strip():
            continue
        if line_number == 1 and line.startswith(_BOM):
            line = line[len(_BOM) :]
            start += len(_BOM)
        yield start, parse_json_line(line, line_number)


def parse_json_line(line: bytes, line_number: int | None = None) -> Any:
    where = f" on line {line_number}" if line_number else ""
    try:
        return json.loads(decode(line))
    except (json.JSONDecodeError, RecursionError) as exc:
        return BadRow(f"malformed JSON{where}: {getattr(exc, 'msg', exc)}", line)


def read_jsonl_at(fh: IO[bytes], offset: int) -> Any:
    fh.seek(offset)
    return parse_json_line(fh.readline())


# ------------------------------------------------------------------------------------------- JSON


class _Window:
    """A forward-only byte buffer over a file, for incremental JSON decoding."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.base = fh.tell()
        self.buf = b""
        self.pos = 0
        self.eof = False

    def fill(self, wanted: int) -> None:
        while not self.eof and len(self.buf) - self.pos < wanted:
            chunk = self.fh.read(max(_READ_SIZE, wanted))
            if not chunk:
                self.eof = True
                break
            if self.pos > _READ_SIZE:
                self.buf = self.buf[self.pos :]
                self.base += self.pos
                self.pos = 0
            self.buf += chunk

    def offset(self) -> int:
        return self.base + self.pos

    def skip_whitespace(self) -> bytes:
        """Skip whitespace; return the next byte (b'' at end of file) without consuming it."""
        while True:
            self.fill(1)
            while self.pos < len(self.buf) and self.buf[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos : self.pos + 1]
            if self.eof:
                return b""

    def decode_value(self) -> Any:
        """One JSON value starting at the current position; the window grows until it holds the value."""
        size = _FIRST_WINDOW
        while True:
            self.fill(size)
            window = self.buf[self.pos : self.pos + size]
            at_end = self.eof and self.pos + size >= len(self.buf)
            text = decode(window)
            try:
                value, end = _DECODER.raw_decode(text)
            except (json.JSONDecodeError, RecursionError) as exc:
                if at_end:
                    raise SourceError(
                        f"malformed JSON at byte {self.offset()}: {getattr(exc, 'msg', exc)}"
                    ) from None
                size *= 2
                continue
            if end == len(text) and not at_end:
                size *= 2  # a value that fills the window may have been cut short (e.g. a number)
                continue
            self.pos += len(text[:end].encode("utf-8", "surrogateescape"))
            return value


def iter_json_array(fh: IO[bytes]) -> Iterator[tuple[int, Any]]:
    """(offset, item) for each item of a top-level JSON array, holding about one item in memory."""
    window = _Window(fh)
    window.fill(3)
    if window.buf.startswith(_BOM):
        window.pos = len(_BOM)
    if window.skip_whitespace() != b"[":
        raise SourceError("not a JSON array (expected '[' at the start of the file)")
    window.pos += 1
    if window.skip_whitespace() == b"]":
        return
    while True:
        window.skip_whitespace()
        start = window.offset()
        yield start, window.decode_value()
        following = window.skip_whitespace()
        window.pos += 1
        if following == b"]":
            return
        if following != b",":
            where = window.offset() - 1
            raise SourceError(f"malformed JSON array at byte {where}: expected ',' or ']' after an item")


def read_json_value_at(fh: IO[bytes], offset: int) -> Any:
    fh.seek(offset)
    return _Window(fh).decode_value()


def json_top_level(fh: IO[bytes]) -> bytes:
    """The first non-whitespace byte of a JSON file (b'[' array, b'{' object)."""
    fh.seek(0)
    head = fh.read(4096)
    fh.seek(0)
    return head.lstrip(_BOM).lstrip(_WHITESPACE)[:1]


# ------------------------------------------------------------------------------------------- CSV


class _OffsetLines:
    """Decoded lines of a binary file that remember where the next line starts (csv pulls lazily)."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.next_offset = fh.tell()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = self.fh.readline()
        if not line:
            raise StopIteration
        self.next_offset += len(line)
        return decode(line)


def iter_csv(fh: IO[bytes], delimiter: str = ",") -> Iterator[tuple[int, Any]]:
    """(offset, row dict) for every record after the header line; a record may span several lines."""
    fh.seek(0)
    if fh.read(3) != _BOM:
        fh.seek(0)
    lines = _OffsetLines(fh)
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise SourceError(f"malformed CSV header: {exc}") from None
    while True:
        start = lines.next_offset
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield start, BadRow(f"malformed CSV record: {exc}", b"")
            continue
        if not values or all(not v.strip() for v in values):
            continue
        yield start, _csv_row(header, values)


def csv_header(fh: IO[bytes], delimiter: str = ",") -> list[str]:
    fh.seek(0)
    if fh.read(3) != _BOM:
        fh.seek(0)
    try:
        return next(csv.reader(_OffsetLines(fh), delimiter=delimiter))
    except (StopIteration, csv.Error):
        return []


def read_csv_at(fh: IO[bytes], offset: int, header: list[str], delimiter: str = ",") -> Any:
    fh.seek(offset)
    try:
        values = next(csv.reader(_OffsetLines(fh), delimiter=delimiter))
    except (StopIteration, csv.Error) as exc:
        return BadRow(f"malformed CSV record: {exc}", b"")
    return _csv_row(header, values)


def _csv_row(header: list[str], values: list[str]) -> Any:
    if len(values) != len(header):
        return BadRow(
            f"CSV record has {len(values)} fields, header has {len(header)}",
            ",".join(values).encode("utf-8", "surrogateescape"),
        )
    return dict(zip(header, values, strict=True))
