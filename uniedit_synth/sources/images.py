"""Image input handling: reading image bytes safely (local path under a root, or a bounded remote fetch) and
normalising any decodable image to an RGB image within the input policy's size limits."""

from __future__ import annotations

import http.client
import io
import os
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..core.config import InputPolicy

#: local image files above this size are refused without being read (a VQA image is a few MB at most)
MAX_LOCAL_IMAGE_BYTES = 256 * 1024 * 1024

_PASS_THROUGH_FORMATS = {"PNG", "JPEG"}
_EXIF_ORIENTATION_TAG = 0x0112
_REMOTE_SCHEMES = ("http://", "https://")


class ImageRejected(Exception):
    """An image cannot be used; `detail` says why in a few words (it becomes the reject detail)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def is_remote(ref: str) -> bool:
    return ref.lower().startswith(_REMOTE_SCHEMES)


def load_image_bytes(ref: str, *, image_root: Path | str | None, policy: InputPolicy) -> bytes:
    """The raw bytes behind an image reference: a path relative to `image_root` (or absolute, but inside it)
    or, when the policy allows it, an http(s) URL. With no root, the current directory is the root.

    Paths that leave the root — `..` segments, absolute paths elsewhere, symlinks pointing outside — are
    refused, so a data file cannot make the pipeline read (and send to an API) files it was not meant to.
    """
    ref = ref.strip()
    if not ref:
        raise ImageRejected("empty image path")
    if is_remote(ref):
        if not policy.allow_remote_images:
            raise ImageRejected(
                "remote image URL refused (set input.allow_remote_images: true to fetch http(s) images)"
            )
        return fetch_remote_image(ref, timeout_s=policy.remote_timeout_s, max_bytes=policy.remote_max_bytes)
    if "://" in ref or ref.startswith("data:"):
        raise ImageRejected(f"unsupported image URL scheme: {ref.split(':', 1)[0]}")
    path = resolve_under_root(ref, image_root)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageRejected(f"image file not found: {ref}") from None
    except OSError as exc:
        raise ImageRejected(f"image file unreadable: {ref} ({exc.strerror})") from None
    if not path.is_file():
        raise ImageRejected(f"image path is not a file: {ref}")
    if size == 0:
        raise ImageRejected(f"empty image file (0 bytes): {ref}")
    if size > MAX_LOCAL_IMAGE_BYTES:
        raise ImageRejected(f"image file too large ({size} bytes): {ref}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageRejected(f"image file unreadable: {ref} ({exc.strerror})") from None


def resolve_under_root(ref: str, image_root: Path | str | None) -> Path:
    """`ref` resolved (symlinks followed) against `image_root`; refused when the result lies outside it."""
    if "\x00" in ref:
        raise ImageRejected("image path contains a NUL byte")
    root = Path(image_root if image_root is not None else os.getcwd()).resolve()
    candidate = Path(ref).expanduser() if ref.startswith("~") else Path(ref)
    if not candidate.is_absolute():
        candidate = root / candidate
    try:
        resolved = candidate.resolve(strict=False)
    except (OSError, RuntimeError, ValueError):  # symlink loops, names the OS refuses
        raise ImageRejected(f"image path cannot be resolved: {ref}") from None
    if resolved != root and root not in resolved.parents:
        raise ImageRejected(f"image path escapes the image root: {ref}")
    return resolved


class _Deadline:
    """A whole-transfer time limit for urllib: a socket timeout bounds one read only, so a server dripping a
    byte a second would never trip it. Every connection the fetch opens (redirects included) is tracked, and
    when the time is up their sockets are shut down, which ends any read blocked on them."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)

    def opener(self) -> urllib.request.OpenerDirector:
        deadline = self

        def tracked(base: type[http.client.HTTPConnection]) -> type[http.client.HTTPConnection]:
            class Tracked(base):  # type: ignore[valid-type, misc]
                def connect(self) -> None:
                    super().connect()
                    deadline.track(self.sock)

            return Tracked

        class HTTP(urllib.request.HTTPHandler):
            def http_open(self, req):  # noqa: ANN001 - urllib's signature
                return self.do_open(tracked(http.client.HTTPConnection), req)

        class HTTPS(urllib.request.HTTPSHandler):
            def https_open(self, req):  # noqa: ANN001
                return self.do_open(tracked(http.client.HTTPSConnection), req, context=getattr(self, "_context", None))

        return urllib.request.build_opener(HTTP(), HTTPS())


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def fetch_remote_image(url: str, *, timeout_s: float, max_bytes: int) -> bytes:
    """GET an image within `timeout_s` in total (connect, headers and body; also per read) and a byte cap
    (checked on Content-Length and while reading)."""
    request = urllib.request.Request(url, headers={"User-Agent": "uniedit-synth", "Accept": "image/*"})
    too_slow = f"remote image fetch took longer than {timeout_s:g}s in total (input.remote_timeout_s)"
    with _Deadline(timeout_s) as deadline:
        try:
            with deadline.opener().open(request, timeout=timeout_s) as response:  # noqa: S310 (scheme checked)
                length = response.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > max_bytes:
                    raise ImageRejected(f"remote image too large ({length} bytes > {max_bytes})")
                chunks: list[bytes] = []
                total = 0
                while True:
                    chunk = response.read(64 * 1024)
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > max_bytes:
                        raise ImageRejected(f"remote image too large (more than {max_bytes} bytes)")
                    chunks.append(chunk)
        except ImageRejected:
            raise
        except urllib.error.HTTPError as exc:
            raise ImageRejected(f"remote image fetch failed: HTTP {exc.code}") from None
        except (urllib.error.URLError, TimeoutError, OSError, ValueError, http.client.HTTPException) as exc:
            if deadline.expired:
                raise ImageRejected(too_slow) from None
            reason = getattr(exc, "reason", exc)
            raise ImageRejected(f"remote image fetch failed: {reason}") from None
        if deadline.expired:  # the shutdown can look like a clean end of the body
            raise ImageRejected(too_slow)
    data = b"".join(chunks)
    if not data:
        raise ImageRejected("remote image is empty (0 bytes)")
    return data


def normalise_image(
    data: bytes, policy: InputPolicy, on_image: Callable[[Image.Image], None] | None = None
) -> bytes:
    """Bytes of an RGB image no larger than `policy.max_side` on its longest side, EXIF orientation applied,
    alpha composited on white, first frame of an animation. A plain RGB PNG/JPEG that needs none of this is
    returned unchanged; anything else is re-encoded as PNG. Raises ImageRejected for anything unusable.
    `on_image` is given the decoded RGB image (the synth-time dedup fingerprints it without a second decode).
    """
    if not data:
        raise ImageRejected("empty image (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageRejected("not an image (unrecognised format)") from None
    except Image.DecompressionBombError:
        raise ImageRejected("decompression bomb refused (image header declares too many pixels)") from None
    except Exception as exc:  # noqa: BLE001 — a malformed header can raise nearly anything inside Pillow
        raise ImageRejected(f"unreadable image header: {_short(exc)}") from None
    with image:
        width, height = image.size
        if width <= 0 or height <= 0:
            raise ImageRejected(f"image has no pixels ({width}x{height})")
        if width * height > policy.max_pixels:
            # Refused from the header alone, before any pixel is decoded.
            raise ImageRejected(
                f"image too large: {width}x{height} = {width * height} pixels > max_pixels {policy.max_pixels}"
            )
        original_format = image.format
        animated = bool(getattr(image, "is_animated", False))
        longest = max(width, height)
        if original_format == "JPEG" and longest > policy.max_side:
            # Let libjpeg decode at a reduced scale: far less memory and time for huge photos.
            scale = policy.max_side / longest
            image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
        try:
            image.load()
        except Image.DecompressionBombError:
            raise ImageRejected("decompression bomb refused") from None
        except Exception as exc:  # noqa: BLE001 — truncated/corrupt data surfaces as OSError, SyntaxError, ...
            raise ImageRejected(f"corrupt or truncated image: {_short(exc)}") from None
        # Only after a successful full decode: Pillow's PNG getexif() loads the image itself and would
        # swallow a decoding error here, leaving a half-read image that looks loaded.
        orientation = _exif_orientation(image)

        if (
            original_format in _PASS_THROUGH_FORMATS
            and image.mode == "RGB"
            and "transparency" not in image.info
            and orientation in (None, 1)
            and not animated
            and longest <= policy.max_side
        ):
            if on_image is not None:
                on_image(image)
            return data

        try:
            upright = ImageOps.exif_transpose(image) if orientation not in (None, 1) else image
            rgb = _to_rgb(upright)
            if max(rgb.size) > policy.max_side:
                rgb.thumbnail((policy.max_side, policy.max_side), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            rgb.save(out, format="PNG", optimize=False)
            if on_image is not None:
                on_image(rgb)
        except ImageRejected:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ImageRejected(f"image cannot be converted to RGB: {_short(exc)}") from None
    return out.getvalue()


def image_size(data: bytes) -> tuple[int, int]:
    """Width and height of encoded image bytes (header only)."""
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _high_bit_depth_to_rgb(image)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return image.copy()
    return image.convert("RGB")


def _high_bit_depth_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit and float greyscale scaled into 8 bits (Pillow's own convert clips everything above 255)."""
    array = np.asarray(image)
    if image.mode.startswith("I;16"):
        scaled = (array.astype(np.uint32) >> 8).astype(np.uint8)
    else:
        values = array.astype(np.float64)
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        span = high - low or 1.0
        scaled = np.clip(np.nan_to_num((values - low) / span * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L").convert("RGB")


def _exif_orientation(image: Image.Image) -> int | None:
    try:
        value = image.getexif().get(_EXIF_ORIENTATION_TAG)
    except Exception:  # noqa: BLE001 — a broken EXIF block must not lose an otherwise good image
        return None
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else None


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
