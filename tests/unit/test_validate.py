"""validate_record: every kind of bad input becomes InvalidInput with a useful detail; good input comes out
as a clean RGB image within the policy's limits."""

from __future__ import annotations

import io
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from uniedit_synth.core.config import InputPolicy
from uniedit_synth.core.records import VQARecord
from uniedit_synth.sources.validate import InvalidInput, clean_text, validate_record


def encode(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def record(image: bytes | None = None, image_path: str | None = None, **fields) -> VQARecord:
    base = {"id": "t/1", "source": "t", "question": "What colour is the square?", "answer": "red"}
    base.update(fields)
    return VQARecord(image=image, image_path=image_path, **base)


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def rejected(rec: VQARecord, policy: InputPolicy | None = None, root: Path | None = None) -> str:
    with pytest.raises(InvalidInput) as info:
        validate_record(rec, policy or InputPolicy(), root)
    assert info.value.detail == str(info.value)
    return info.value.detail


RED_PNG = encode(Image.new("RGB", (16, 12), (255, 0, 0)))


# ------------------------------------------------------------------------------------------ good input


def test_plain_rgb_png_passes_through_unchanged() -> None:
    clean = validate_record(record(RED_PNG), InputPolicy())
    assert clean.image == RED_PNG
    assert clean.question == "What colour is the square?" and clean.answer == "red"


def test_image_path_is_loaded_under_the_root(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(RED_PNG)
    clean = validate_record(record(image_path="imgs/a.png"), InputPolicy(), tmp_path)
    assert decoded(clean.image).mode == "RGB"
    assert clean.image_path == "imgs/a.png"  # the original reference is kept


def test_absolute_path_inside_the_root_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(RED_PNG)
    clean = validate_record(record(image_path=str(tmp_path / "a.png")), InputPolicy(), tmp_path)
    assert clean.image == RED_PNG


def test_symlink_inside_the_root_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(RED_PNG)
    os.symlink(tmp_path / "a.png", tmp_path / "link.png")
    assert validate_record(record(image_path="link.png"), InputPolicy(), tmp_path).image == RED_PNG


def test_text_is_cleaned() -> None:
    clean = validate_record(
        record(RED_PNG, question="  What\x00 is  \t this?\r\n\n\n\nReally? ", answer=" red\x07 "),
        InputPolicy(),
    )
    assert clean.question == "What is this?\n\nReally?"
    assert clean.answer == "red"


# ---------------------------------------------------------------------------------------- bad records


def test_source_flagged_record_is_rejected_with_its_reason() -> None:
    assert rejected(record(RED_PNG, invalid="multi-image row")) == "multi-image row"


def test_no_image_at_all() -> None:
    assert rejected(record()) == "no image"


def test_missing_file(tmp_path: Path) -> None:
    assert "not found" in rejected(record(image_path="nope.png"), root=tmp_path)


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    assert "empty image file" in rejected(record(image_path="empty.png"), root=tmp_path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    (tmp_path / "dir.png").mkdir()
    assert "not a file" in rejected(record(image_path="dir.png"), root=tmp_path)


def test_non_image_bytes() -> None:
    assert "not an image" in rejected(record(b"%PDF-1.4 definitely not a picture"))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image(fmt: str) -> None:
    whole = encode(Image.effect_noise((64, 64), 50).convert("RGB"), fmt)
    detail = rejected(record(whole[: len(whole) // 2]))
    assert "truncated" in detail or "corrupt" in detail


def test_corrupt_png_data() -> None:
    data = bytearray(encode(Image.effect_noise((32, 32), 50).convert("RGB")))
    start = data.index(b"IDAT") + 4  # the zlib stream header of the pixel data
    data[start : start + 8] = b"\xff" * 8
    detail = rejected(record(bytes(data)))
    assert "corrupt" in detail or "unreadable" in detail


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but whose pixel data is a few bytes of nothing."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _chunk(b"IEND", b"")
    )


def test_too_many_pixels_is_refused_from_the_header() -> None:
    # No pixel data: a decode attempt would say "truncated"; the refusal must come from the header alone.
    detail = rejected(record(_png_header_only(10_000, 7_000)), InputPolicy(max_pixels=64_000_000))
    assert "too large" in detail and "10000x7000" in detail


def test_pillow_decompression_bomb_error_is_handled() -> None:
    # Above twice Pillow's MAX_IMAGE_PIXELS, Image.open itself raises; it must still be an InvalidInput.
    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 10
    detail = rejected(record(_png_header_only(side, side)), InputPolicy(max_pixels=10**12))
    assert "decompression bomb" in detail


def test_empty_question_and_answer() -> None:
    assert rejected(record(RED_PNG, question="   \n\t ")) == "empty question"
    assert rejected(record(RED_PNG, answer="")) == "empty answer"


def test_non_utf8_text() -> None:
    broken = b"caf\xe9?".decode("utf-8", "surrogateescape")
    assert "UTF-8" in rejected(record(RED_PNG, question=broken))


def test_long_text_is_invalid_or_truncated() -> None:
    policy = InputPolicy(max_text_chars=20)
    assert "too long" in rejected(record(RED_PNG, question="x" * 50), policy)
    clean = validate_record(
        record(RED_PNG, question="y" * 50), InputPolicy(max_text_chars=20, truncate_long_text=True)
    )
    assert clean.question == "y" * 20


@pytest.mark.parametrize(
    "ref",
    ["../../etc/passwd", "../outside.png", "/etc/passwd", "sub/../../outside.png"],
)
def test_paths_escaping_the_root_are_refused(tmp_path: Path, ref: str) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "outside.png").write_bytes(RED_PNG)
    assert "escapes the image root" in rejected(record(image_path=ref), root=root)


def test_symlink_leaving_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.png").write_bytes(RED_PNG)
    os.symlink(tmp_path / "secret.png", root / "innocent.png")
    assert "escapes the image root" in rejected(record(image_path="innocent.png"), root=root)


def test_no_root_means_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "here.png").write_bytes(RED_PNG)
    monkeypatch.chdir(tmp_path)
    assert validate_record(record(image_path="here.png"), InputPolicy()).image == RED_PNG
    assert "escapes" in rejected(record(image_path="/etc/hostname"))


def test_other_url_schemes_are_refused() -> None:
    assert "unsupported image URL scheme" in rejected(record(image_path="ftp://example.org/a.png"))


# ------------------------------------------------------------------------------------------- normalising


def test_huge_dimensions_are_downscaled() -> None:
    clean = validate_record(record(encode(Image.new("RGB", (300, 100), "blue"))), InputPolicy(max_side=64))
    assert decoded(clean.image).size == (64, 21)


def test_large_jpeg_is_downscaled() -> None:
    big = encode(Image.effect_noise((1600, 800), 40).convert("RGB"), "JPEG")
    out = decoded(validate_record(record(big), InputPolicy(max_side=200)).image)
    assert out.mode == "RGB" and max(out.size) == 200 and out.size[0] == 2 * out.size[1]


def test_rgba_is_composited_on_white() -> None:
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    image.putpixel((0, 0), (0, 0, 255, 255))
    out = decoded(validate_record(record(encode(image)), InputPolicy()).image)
    assert out.mode == "RGB"
    assert out.getpixel((3, 3)) == (255, 255, 255)
    assert out.getpixel((0, 0)) == (0, 0, 255)


def test_palette_with_transparency_is_composited_on_white() -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((1, 1), 1)
    out = decoded(validate_record(record(encode(image, transparency=0)), InputPolicy()).image)
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 1)) == (0, 255, 0)


def test_la_mode() -> None:
    image = Image.new("LA", (4, 4), (0, 255))
    image.putpixel((0, 0), (0, 0))
    out = decoded(validate_record(record(encode(image)), InputPolicy()).image)
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 1)) == (0, 0, 0)


def test_cmyk_jpeg() -> None:
    out = decoded(
        validate_record(
            record(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG")), InputPolicy()
        ).image
    )
    assert out.mode == "RGB"
    red, green, blue = out.getpixel((4, 4))
    assert red > 200 and green < 60 and blue < 60


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    image = Image.new("I;16", (4, 4), 32768)
    out = decoded(validate_record(record(encode(image)), InputPolicy()).image)
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (128, 128, 128)


def test_one_bit_image() -> None:
    image = Image.new("1", (4, 4), 0)
    image.putpixel((2, 2), 1)
    out = decoded(validate_record(record(encode(image)), InputPolicy()).image)
    assert out.getpixel((2, 2)) == (255, 255, 255) and out.getpixel((0, 0)) == (0, 0, 0)


def test_exif_rotated_jpeg_is_turned_upright() -> None:
    image = Image.new("RGB", (40, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = encode(image, "JPEG", exif=exif.tobytes())
    out = decoded(validate_record(record(data), InputPolicy()).image)
    assert out.size == (20, 40)
    assert out.mode == "RGB"


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_keeps_the_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    extra = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(buffer, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **extra)
    out = decoded(validate_record(record(buffer.getvalue()), InputPolicy()).image)
    assert out.mode == "RGB"
    red, green, blue = out.getpixel((4, 4))
    assert red > 200 and blue < 60


def test_random_garbage_never_escapes_as_another_exception() -> None:
    import random

    rng = random.Random(7)
    png = bytearray(encode(Image.effect_noise((24, 24), 60).convert("RGB")))
    for _ in range(60):
        data = bytearray(png)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = data[: rng.randint(1, len(data))]
        try:
            out = validate_record(record(bytes(data)), InputPolicy())
        except InvalidInput:
            continue
        assert decoded(out.image).mode == "RGB"


def test_clean_text_rejects_non_strings() -> None:
    with pytest.raises(InvalidInput, match="not text"):
        clean_text(3, "answer", InputPolicy())


# ---------------------------------------------------------------------------------------------- remote


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        if self.path == "/red.png":
            body = RED_PNG
        elif self.path == "/big.png":
            body = b"\x89PNG" + b"0" * 50_000
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_remote_url_is_refused_by_default(server: str) -> None:
    assert "remote image URL refused" in rejected(record(image_path=f"{server}/red.png"))


def test_remote_url_is_fetched_when_allowed(server: str) -> None:
    policy = InputPolicy(allow_remote_images=True, remote_timeout_s=5)
    assert validate_record(record(image_path=f"{server}/red.png"), policy).image == RED_PNG


def test_remote_errors_and_size_cap(server: str) -> None:
    policy = InputPolicy(allow_remote_images=True, remote_timeout_s=5, remote_max_bytes=10_000)
    assert "HTTP 404" in rejected(record(image_path=f"{server}/missing.png"), policy)
    assert "too large" in rejected(record(image_path=f"{server}/big.png"), policy)


def test_unreachable_remote_host() -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    policy = InputPolicy(allow_remote_images=True, remote_timeout_s=2)
    assert "fetch failed" in rejected(record(image_path=f"http://127.0.0.1:{port}/x.png"), policy)


class _DripHandler(BaseHTTPRequestHandler):
    """Headers at once, then the body one byte every 0.2 s: each read is quick, the whole would take minutes."""

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(RED_PNG) + 1000))
        self.end_headers()
        try:
            for byte in RED_PNG + b"\0" * 1000:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass  # the client gave up

    def log_message(self, *args: object) -> None:
        pass


def test_a_dripping_remote_image_is_bounded_in_total_time() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _DripHandler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    policy = InputPolicy(allow_remote_images=True, remote_timeout_s=1)
    outcome: list[str] = []
    url = f"http://127.0.0.1:{httpd.server_address[1]}/slow.png"
    worker = threading.Thread(target=lambda: outcome.append(rejected(record(image_path=url), policy)), daemon=True)
    try:
        worker.start()
        worker.join(60)  # without a total bound this fetch takes over 4 minutes
        assert outcome and "longer than 1s in total" in outcome[0], outcome
    finally:
        httpd.shutdown()
        httpd.server_close()
