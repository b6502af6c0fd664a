"""The `scenes` source: procedurally generated VQA records from the offline world, seeded and streaming."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from ..core.config import SourceSpec
from ..core.errors import SourceError
from ..core.records import VQARecord
from ..offline.questions import (
    SCENE_CATEGORIES,
    SCENE_REQUIREMENTS,
    QueryError,
    generate_question,
    generate_vqa,
    plausible_answers,
)
from ..offline.render import PNG_ENCODINGS, PNG_ISAL, PNG_PILLOW, encode_png, render_image, render_png
from ..offline.world import Scene, generate_scene
from .base import Source
from .opening import COMMON_OPTIONS

#: a record's `meta` key naming the PNG encoding its scene is rendered in (offline/render.py), set only when it is
#: not PNG_PILLOW: a run's records travel to its workers with it, and the records of a run made before it existed
#: are, to the byte, what they were (validate_record drops it with the rendering done)
PNG_META_KEY = "_png"
_S = TypeVar("_S", bound=Source)


def render_record_image(meta: dict) -> bytes | None:
    """The PNG of a deferred offline-world record (None for any other record)."""
    rendered = render_record(meta)
    return None if rendered is None else rendered[0]


def render_record(meta: dict) -> tuple[bytes, Image.Image, np.ndarray | None] | None:
    """The PNG of a deferred offline-world record, the image it encodes and, where the encoding read them
    (PNG_ISAL), its RGB pixels (None for any other record): the worker validates the image it just drew without
    decoding the PNG again, and the pixel gates take those pixels without converting the image again."""
    if meta.get("world") != "scenes" or "scene" not in meta:
        return None
    image = render_image(Scene.model_validate(meta["scene"]))
    encoding = meta.get(PNG_META_KEY, PNG_PILLOW)
    pixels = np.asarray(image) if encoding == PNG_ISAL and image.mode == "RGB" else None
    return encode_png(image, encoding, pixels), image, pixels


def pin_scene_png(source: _S, encoding: str) -> _S:
    """`source`, whose offline-world records (if it is the scenes source) render in `encoding`: the run's pinned
    encoding (run.json `scene_png`, engine/run_info.py), as the run's cache keys hash the images' bytes."""
    if encoding not in PNG_ENCODINGS:
        raise SourceError(f"this run's scenes are PNGs encoded as {encoding!r} (run.json scene_png), which this "
                          f"version cannot write (it knows {', '.join(PNG_ENCODINGS)}): resume it with the "
                          "version that made it, or use another --out")
    inner = getattr(source, "inner", source)
    if isinstance(inner, ScenesSource):
        inner.png_encoding = encoding
    return source


class ScenesSource(Source):
    """`count` records; record `i` depends only on (`seed`, `i`), so a larger count keeps the prefix.

    Categories cycle in the given order (record i gets `categories[i % len(categories)]`), so every
    category is represented in any run of at least that many records.

    With `defer_render` (how `uniedit synth` opens it) records carry the scene graph but no image: the
    image is rendered by `validate_record` in the worker. Reading the source stays cheap (0.1 ms a record
    instead of 1.5), which matters when a resumed run re-reads finished shards to check their ids, and
    rendering runs in parallel on the workers instead of in the driver.

    With `questions_per_image` k > 1 (like CLEVR's several questions per image), records k·j … k·j+k-1 ask k
    questions (their categories still cycle) about one scene, image `j`, drawn from (`seed`, `j`, k); their
    `meta.image_id` is the same, so `source.group_by_image` groups them. k = 1 keeps the one-scene-a-record
    stream of earlier releases, record for record.
    """

    label = "scenes"

    def __init__(
        self,
        count: int = 300,
        seed: int = 0,
        image_size: int = 256,
        categories: list[str] | None = None,
        defer_render: bool = False,
        questions_per_image: int = 1,
    ) -> None:
        if count < 0:
            raise SourceError(f"scenes: count must be >= 0, got {count}")
        if not 64 <= image_size <= 2048:
            raise SourceError(f"scenes: image_size must be between 64 and 2048, got {image_size}")
        chosen = list(categories) if categories else list(SCENE_CATEGORIES)
        unknown = [c for c in chosen if c not in SCENE_CATEGORIES]
        if unknown:
            raise SourceError(
                f"scenes: unknown categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)} "
                f"(the offline world has: {', '.join(SCENE_CATEGORIES)})"
            )
        if isinstance(questions_per_image, bool) or not isinstance(questions_per_image, int) \
                or not 1 <= questions_per_image <= 5:
            raise SourceError(f"scenes: questions_per_image must be an integer from 1 to 5, got {questions_per_image!r}")
        self.questions_per_image = questions_per_image
        self._last_image: tuple[int, tuple[Scene, list[tuple[str, str, dict]]]] | None = None
        self.count = count
        self.seed = seed
        self.image_size = image_size
        self.categories = chosen
        self.defer_render = defer_render
        #: the PNG encoding of this source's images (pin_scene_png); PNG_PILLOW unless a run pinned another
        self.png_encoding = PNG_PILLOW

    @classmethod
    def opens(cls, spec: str) -> bool:
        return spec == "scenes"

    @classmethod
    def open(cls, spec: SourceSpec, *, seed: int, limit: int | None, subject_key: str | None) -> ScenesSource:
        options = {k: v for k, v in spec.options.items() if k not in COMMON_OPTIONS}
        if spec.group_by_image is not None:  # grouping on: CLEVR-like, several questions about each scene
            options.setdefault("questions_per_image", spec.group_by_image.scenes_questions_per_image)
        try:
            return cls(count=limit or 300, seed=seed, defer_render=True, **options)
        except TypeError as exc:
            raise SourceError(f"scenes: invalid source.options ({exc})") from None

    @classmethod
    def image_root_of(cls, spec: SourceSpec) -> Path | None:
        return None  # records carry their scene: the worker renders the image

    def record(self, index: int) -> VQARecord:
        """Record `index`, built from its own rng (independent of every other record)."""
        category = self.categories[index % len(self.categories)]
        extra: dict = {}
        if self.questions_per_image == 1:
            rng = random.Random(f"uniedit-scenes/{self.seed}/{index}")
            scene, question, answer, spec = generate_vqa(rng, category, size=self.image_size)
        else:
            image = index // self.questions_per_image
            scene, drafts = self._image(image)
            question, answer, spec = drafts[index % self.questions_per_image]
            extra = {"image_id": f"{self.seed}-{image:06d}"}
        return VQARecord(
            id=self._id(index),
            source="scenes",
            image=None if self.defer_render else render_png(scene, self.png_encoding),
            question=question,
            answer=answer,
            category=category,
            meta={
                "world": "scenes",
                "scene": scene.model_dump(mode="json"),
                "question_spec": spec,
                # what the question could have answered: the plan's distractors come from here
                "answer_space": [str(v) for v in plausible_answers(scene, spec["query"])],
                **extra,
                **self._png_meta(),
            },
        )

    def _image(self, image: int) -> tuple[Scene, list[tuple[str, str, dict]]]:
        """Scene `image` and its k questions (one per record, categories as the records' own), drawn from their
        own rng; the last one is kept, as records of an image come one after another."""
        if self._last_image is not None and self._last_image[0] == image:
            return self._last_image[1]
        k = self.questions_per_image
        rng = random.Random(f"uniedit-scenes/{self.seed}/image-{image}/{k}")
        categories = [self.categories[(image * k + j) % len(self.categories)] for j in range(k)]
        require = {need for c in categories for need in SCENE_REQUIREMENTS.get(c, ())}
        attempts = 0
        while True:  # new scenes until every question fits (and, within reason, no two ask the same)
            attempts += 1
            scene = generate_scene(rng, size=self.image_size, require=require)
            try:
                drafts = [generate_question(scene, c, rng) for c in categories]
            except QueryError:
                continue
            # one category with few question forms (ocr: "what does the sign say") may repeat itself
            if len({text for text, _, _ in drafts}) == k or attempts > 200:
                break
        self._last_image = (image, (scene, drafts))
        return scene, drafts

    #: set by `lighten`: records are ids and positions only, and the workers generate them (`hydrate`)
    light = False

    def lighten(self) -> str | None:
        """A record's id and category follow from its index alone, so the driver yields those (no scene is
        generated there) and each worker generates its shard's records."""
        self.light = True
        return None

    def hydrate(self, records: list[VQARecord]) -> list[VQARecord]:
        out = []
        for record in records:
            if "_pos" in record.meta:
                whole = self.record(int(record.meta["_pos"]))
                if PNG_META_KEY in record.meta:  # the driver's pin: this source (the worker's) has none
                    whole.meta[PNG_META_KEY] = record.meta[PNG_META_KEY]
                record = whole.model_copy(update={"id": record.id, "duplicate": record.duplicate})
            out.append(record)
        return out

    def _png_meta(self) -> dict[str, str]:
        return {} if self.png_encoding == PNG_PILLOW else {PNG_META_KEY: self.png_encoding}

    def __iter__(self) -> Iterator[VQARecord]:
        for index in range(self.count):
            if self.light:
                yield VQARecord(id=self._id(index), source="scenes",
                                category=self.categories[index % len(self.categories)],
                                meta={"_pos": index, "_turn": 0, **self._png_meta()})
            else:
                yield self.record(index)

    def _id(self, index: int) -> str:
        return f"scenes/{self.seed}-{index:06d}"

    def estimated_len(self) -> int | None:
        return self.count
