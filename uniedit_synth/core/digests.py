"""sha256 of image bytes, remembered per bytes object: one image is hashed once, not in every place it goes.

A record's source image is in most of its calls (classify, rewrite, every judge axis: backends/base.py
request_key) and an edited image in its cache entry (run/cache.py) and its judge call, each time as the same
bytes object. An entry holds its bytes, so that object's id is not reused while the entry is here; at most
DIGEST_BUDGET bytes are held (a few records' images beyond those still in flight). Mutable buffers
(bytearray, memoryview) are hashed every time.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

DIGEST_BUDGET = 32 << 20
_digests: OrderedDict[int, tuple[bytes, str]] = OrderedDict()
_held = 0
_lock = threading.Lock()


def image_digest(data: bytes) -> str:
    """hashlib.sha256(data).hexdigest(), remembered for the same bytes object."""
    global _held
    with _lock:
        hit = _digests.get(id(data))
        if hit is not None and hit[0] is data:
            _digests.move_to_end(id(data))
            return hit[1]
    digest = hashlib.sha256(data).hexdigest()
    if type(data) is not bytes or len(data) > DIGEST_BUDGET // 4:
        return digest
    with _lock:
        old = _digests.pop(id(data), None)
        if old is not None:
            _held -= len(old[0])
        _digests[id(data)] = (data, digest)
        _held += len(data)
        while _held > DIGEST_BUDGET:
            _, (gone, _) = _digests.popitem(last=False)
            _held -= len(gone)
    return digest
