"""The fakes' fast wire paths (tests/fakes/wire.py) give exactly what the stdlib's email-based parsers give,
and the fakes reply with the same bytes with them as without (edited_png's memo, the request parser)."""

from __future__ import annotations

import http.client
import io
import random
import re
import socket
from http.server import BaseHTTPRequestHandler

import httpx2 as httpx  # the openai SDK's HTTP client here
import pytest
from PIL import Image

from tests.fakes import FakeOpenAI, base, wire


def _png(seed: int, side: int = 32) -> bytes:
    rng = random.Random(seed)
    image = Image.new("RGB", (side, side), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _httpx_multipart(data: dict, files: list) -> tuple[str, bytes]:
    request = httpx.Request("POST", "http://127.0.0.1/v1/images/edits", data=data, files=files)
    return request.headers["content-type"], request.read()


def test_sdk_shaped_multipart_takes_the_fast_path_and_equals_the_email_parser() -> None:
    cases = [
        ({"prompt": "add a mug", "model": "gpt-image-1", "n": "2", "size": "1024x1024"},
         [("image", ("image.png", _png(1), "image/png"))]),
        ({"prompt": "naïve café ☕", "model": "gpt-image-1"},
         [("image[]", ("a.png", _png(2), "image/png")), ("image[]", ("b.png", _png(3), "image/png"))]),
        ({"purpose": "batch"}, [("file", ("batch.jsonl", b'{"a": 1}\r\n{"b": 2}\n', "application/jsonl"))]),
        ({"prompt": ""}, [("image", ("x.png", b"", "IMAGE/PNG"))]),
    ]
    for data, files in cases:
        content_type, raw = _httpx_multipart(data, files)
        fast = wire._fast_multipart(content_type, raw)
        assert fast is not None, content_type
        assert fast == wire.parse_multipart_email(content_type, raw)
        assert base.parse_body(content_type, raw) == fast


def _body(boundary: str, parts: list[bytes], preamble: bytes = b"", tail: bytes = b"--\r\n") -> bytes:
    delimiter = b"--" + boundary.encode()
    return preamble + delimiter + b"\r\n" + (b"\r\n" + delimiter + b"\r\n").join(parts) + b"\r\n" + delimiter + tail


def test_odd_multipart_bodies_parse_as_the_email_parser_does() -> None:
    b = "0123abcd"
    image = b'Content-Disposition: form-data; name="image"; filename="i.png"\r\nContent-Type: image/png\r\n\r\n'
    field = b'Content-Disposition: form-data; name="prompt"\r\n\r\n'
    bodies = [
        _body(b, [image + b"data ends in CR\r", field + b"text ends in LF\n"]),
        _body(b, [image + b"\r\n\r\nblank lines first", field + b"\xff\xfe not utf-8"]),
        _body(b, [image + b"mid-line --" + b.encode() + b" is not a delimiter", field + b"x"]),
        _body(b, [image + b"line\n--" + b.encode() + b"\nafter LF is one", field + b"x"]),
        _body(b, [image + b"x", field + b"y"], preamble=b"a preamble\r\n"),
        _body(b, [image + b"x", field + b"y"], tail=b"--\r\nan epilogue"),
        _body(b, [image + b"x", field + b"y"], tail=b"--"),
        _body(b, [b'Content-Disposition: form-data; name="image"; filename="q\\"uote.png"\r\n\r\nx']),
        _body(b, [b"Content-Disposition: form-data; name=image; filename=bare.png\r\n\r\nx"]),
        _body(b, [b"Content-Disposition: form-data; name=\"f\"; filename*=UTF-8''%E2%98%95.png\r\n\r\nx"]),
        _body(b, [b'Content-Disposition: form-data; name="image"; filename="i.png"\r\nContent-Type: image/png; '
                  b"charset=x\r\n\r\nx"]),
        _body(b, [b'Content-Disposition: form-data; name="image"; filename="i.png"\r\nContent-Transfer-Encoding: '
                  b"base64\r\n\r\naGVsbG8="]),
        _body(b, [b'Content-Disposition: form-data; name="image"; filename="i.png"\r\n\r\nno content type']),
        _body(b, [b'Content-Disposition: form-data;  name="a"\r\n\r\ntwo spaces', field + b"1", field + b"2"]),
        _body(b, [b'content-disposition:form-data; name="a"\r\n\r\nlower case, no space']),
        _body(b, [b'Content-Disposition: form-data; name="a"\r\n folded: yes\r\n\r\nfolded header']),
        _body(b, [b"no headers at all"]),
        _body(b, [image + b"x\r\n--" + b.encode() + b"  \r\nblank after a delimiter"]),
    ]
    content_type = f"multipart/form-data; boundary={b}"
    for raw in bodies:
        assert wire.parse_multipart(content_type, raw) == wire.parse_multipart_email(content_type, raw), raw
    quoted = _body(b, [field + b"q"])
    assert wire.parse_multipart(f'multipart/form-data; boundary="{b}"', quoted) == wire.parse_multipart_email(
        f'multipart/form-data; boundary="{b}"', quoted)


def test_random_binary_parts_parse_as_the_email_parser_does() -> None:
    rng = random.Random(31)
    b = "f00d"
    alphabet = [b"\r", b"\n", b"\r\n", b"-", b"--", b"--f00d", b"f00d", b"x", b"\x00", b"\xff", b" "]
    for _ in range(300):
        parts = []
        for index in range(rng.randint(1, 3)):
            data = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
            head = f'Content-Disposition: form-data; name="p{index}"'
            if rng.random() < 0.5:
                head += f'; filename="f{index}.bin"\r\nContent-Type: application/octet-stream'
            parts.append(head.encode() + b"\r\n\r\n" + data)
        raw = _body(b, parts)
        content_type = f"multipart/form-data; boundary={b}"
        assert wire.parse_multipart(content_type, raw) == wire.parse_multipart_email(content_type, raw), raw


def _stdlib_headers(lines: list[bytes]) -> http.client.HTTPMessage:
    return http.client.parse_headers(io.BytesIO(b"".join(lines)))


@pytest.mark.parametrize("block", [
    b"Host: 127.0.0.1\r\nContent-Type: application/json\r\nAuthorization: Bearer sk-x\r\n"
    b"X-Trailing:  spaced value  \r\nx-dup: 1\r\nX-Dup: 2\r\nEmpty:\r\n\r\n",
    b"Host: a\nLF-only: yes\n\n",
    b"Host: a\r\nFolded: one\r\n two\r\n\r\n",
    b"Host: a\r\nLatin: caf\xe9\r\n\r\n",
    b"Host: a\r\nBad Header: x\r\n\r\n",
])
def test_header_lines_read_as_the_stdlib_reads_them(block: bytes) -> None:
    lines = wire.read_headers(io.BytesIO(block))
    ours = wire.parse_header_lines(lines, http.client.HTTPMessage)
    theirs = _stdlib_headers(lines)
    assert list(ours.items()) == list(theirs.items())
    for name, _ in theirs.items():
        for variant in (name, name.lower(), name.upper()):
            assert ours.get(variant) == theirs.get(variant)
            assert ours[variant] == theirs[variant]
            assert (variant in ours) == (variant in theirs)
            assert ours.get_all(variant) == theirs.get_all(variant)
    assert ours.get("absent", "default") == theirs.get("absent", "default")
    assert list(ours.keys()) == list(theirs.keys()) and list(ours.values()) == list(theirs.values())
    if b"Folded" in block or b"Bad Header" in block:
        assert isinstance(ours, http.client.HTTPMessage)  # not one-line headers: the stdlib parses them


def _exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _normalised(reply: bytes) -> bytes:
    reply = re.sub(rb"Date: [^\r\n]*", b"Date: -", reply)
    return re.sub(rb'"(created|id)": ("[^"]*"|\d+)', rb'"\1": -', reply)


def test_fake_replies_with_the_same_bytes_as_the_stdlib_request_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    chat = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "task_category?"}]}'
    requests = [
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Type: "
        b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(chat), chat),
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nConnection: close\r\n"
        b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n%s" % (len(chat), chat),
        b"POST /v1/chat/completions HTTP/1.0\r\nAuthorization: Bearer k\r\nContent-Length: %d\r\n\r\n%s"
        % (len(chat), chat),
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n folded\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(chat), chat),
        b"GET //v1/models HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/models HTTP/2.0\r\nHost: x\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Length: 2\r\n\r\n"
        b"{}POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ]
    replies, seen = {}, {}
    for parser in ("fast", "stdlib"):
        if parser == "stdlib":
            monkeypatch.setattr(base._Handler, "parse_request", BaseHTTPRequestHandler.parse_request)
        with FakeOpenAI() as server:
            replies[parser] = [_normalised(_exchange(server.port, request)) for request in requests]
            seen[parser] = [(r.method, r.path, r.headers, r.body, r.status) for r in server.requests]
    assert replies["fast"] == replies["stdlib"]
    assert seen["fast"] == seen["stdlib"]
    assert replies["fast"][0].startswith(b"HTTP/1.1 200 OK\r\n") and b"HTTP/1.1 100 Continue" in replies["fast"][1]
    assert [status for *_, status in seen["fast"]] == [200, 200, 200, 200, 404, 200, 401]
