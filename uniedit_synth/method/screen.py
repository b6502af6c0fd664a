"""Benchmark matching and input dedup, shared by `uniedit audit` and the synth-time screen.

`Decontaminator` answers "which benchmark items does this image or text match?": benchmark images go into a
HammingIndex (candidates within `max_distance` bits of the 64-bit pHash) and every candidate is verified
(fingerprint.same_image); benchmark texts go into a MinHash LSH TextIndex verified by exact word-3-gram
Jaccard. A text must have at least MIN_SHINGLES n-grams to be compared: short generic questions ("What colour
is it?") are shared by unrelated data sets and prove nothing.

`InputScreen` is what the synth engine runs before any model call. It lives in the coordinator, which sees a
shard's records only after every earlier shard's (like the category caps), so "the first copy is kept, later
ones are `duplicate_input`" means the same records on every run, with any number of workers or nodes. The
screened fingerprints of finished shards are saved next to them (`screen/shard-NNNNN.json`) and fed back on
resume, so a resumed run decides exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .fingerprint import (
    DEFAULT_MAX_DISTANCE,
    Benchmark,
    ImageFingerprint,
    detail_distance,
    same_image,
    shingles,
    text_key,
)
from .index import HammingIndex, TextIndex

MIN_SHINGLES = 3
TEXT_THRESHOLD = 0.8


@dataclass(frozen=True)
class Match:
    benchmark: str
    item: str
    by: str  # "image" or "text"
    score: float  # verify distance in bits (image) or Jaccard (text)

    def as_dict(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "item": self.item, "by": self.by, "score": self.score}

    def describe(self) -> str:
        how = f"image, {int(self.score)} bits" if self.by == "image" else f"text, Jaccard {self.score:.2f}"
        return f"{self.benchmark}:{self.item} ({how})"


class Decontaminator:
    def __init__(
        self,
        benchmarks: Sequence[Benchmark],
        max_distance: int = DEFAULT_MAX_DISTANCE,
        text_threshold: float = TEXT_THRESHOLD,
    ):
        self.names = [b.name for b in benchmarks]
        self.items = sum(len(b) for b in benchmarks)
        self.skipped_images = {b.name: b.skipped_images for b in benchmarks}
        self._images: HammingIndex[tuple[str, str, ImageFingerprint]] = HammingIndex(max_distance)
        has_text = any(text for bench in benchmarks for text in bench.texts)
        self._texts = TextIndex(text_threshold) if has_text else None
        for bench in benchmarks:
            for key, fingerprint, text in zip(bench.keys, bench.images, bench.texts, strict=True):
                if fingerprint is not None:
                    self._images.add(fingerprint.phash, (bench.name, key, fingerprint))
                if text and self._texts is not None:
                    grams = shingles(text)
                    if len(grams) >= MIN_SHINGLES:
                        self._texts.add(f"{bench.name}\x00{key}", grams)

    def match(self, fingerprint: ImageFingerprint | None, texts: Iterable[str | None] = ()) -> list[Match]:
        found: dict[tuple[str, str], Match] = {}
        if fingerprint is not None:
            for (name, key, other), _distance in self._images.near(fingerprint.phash):
                if same_image(fingerprint, other):
                    found.setdefault((name, key), Match(name, key, "image",
                                                        detail_distance(fingerprint.detail, other.detail)))
        for text in texts:
            if not text or self._texts is None:
                continue
            grams = shingles(text)
            if len(grams) < MIN_SHINGLES:
                continue
            for joined, score in self._texts.matches(grams):
                name, key = joined.split("\x00", 1)
                found.setdefault((name, key), Match(name, key, "text", score))
        return sorted(found.values(), key=lambda m: (m.benchmark, m.item, m.by))


@dataclass
class ScreenEntry:
    """What a worker sends per validated record: its id, image fingerprint (hex) and question."""

    id: str
    fingerprint: str | None
    question: str


class InputScreen:
    """Synth-time dedup (`source.dedup`) and decontamination (`source.decontaminate`), decided in order."""

    def __init__(self, by: str | None, max_distance: int, benchmarks: Sequence[Benchmark] = ()):
        if by not in (None, "image", "pair"):
            raise ValueError("dedup `by` must be image or pair")
        self.by = by
        self.decontaminator = Decontaminator(benchmarks, max_distance) if benchmarks else None
        # per admitted record: its id, and its verify signature packed in a bytearray (80 bytes, no objects)
        self._seen: HammingIndex[int] = HammingIndex(max_distance)
        self._ids: list[str] = []
        self._verify = bytearray()

    def _namespace(self, question: str) -> int:
        return text_key(question) if self.by == "pair" else 0

    def _add(self, record_id: str, fp: ImageFingerprint, namespace: int) -> None:
        self._seen.add(fp.phash, len(self._ids), namespace)
        self._ids.append(record_id)
        self._verify += fp.detail + fp.colour

    def _stored(self, slot: int, phash: int) -> ImageFingerprint:
        packed = self._verify[80 * slot : 80 * slot + 80]
        return ImageFingerprint(phash, bytes(packed[:32]), bytes(packed[32:]))

    def remember(self, entries: Iterable[ScreenEntry]) -> None:
        """Records that passed in a shard finished earlier (resume)."""
        for entry in entries:
            if entry.fingerprint and self.by:
                self._add(entry.id, ImageFingerprint.from_hex(entry.fingerprint), self._namespace(entry.question))

    def decide(self, entries: Sequence[ScreenEntry]) -> list[tuple[str, str] | None]:
        """Per entry, in order: None (passes, and is remembered) or (reject reason, detail)."""
        out: list[tuple[str, str] | None] = []
        for entry in entries:
            fp = ImageFingerprint.from_hex(entry.fingerprint) if entry.fingerprint else None
            if self.decontaminator is not None:
                matches = self.decontaminator.match(fp, [entry.question])
                if matches:
                    out.append(("contaminated", "matches " + "; ".join(m.describe() for m in matches[:3])))
                    continue
            if self.by and fp is not None:
                namespace = self._namespace(entry.question)
                earlier = next(
                    (self._ids[slot] for slot, _d in self._seen.near(fp.phash, namespace)
                     if same_image(fp, self._stored(slot, fp.phash))),
                    None,
                )
                if earlier is not None:
                    what = "the same question and image" if self.by == "pair" else "a near-identical image"
                    out.append(("duplicate_input", f"{what} as {earlier}"))
                    continue
                self._add(entry.id, fp, namespace)
            out.append(None)
        return out
