"""`source.group_by_image`: which records of a shard share an image, and how they become samples of 1–3 questions.

The worker groups a shard's records after validating them (engine/worker.py), so that

- a group never straddles a shard, and a resumed or redone shard gets the same groups (they depend on the
  shard's records and the seed only, never on timing, workers or what other shards did);
- the driver-reads-rows path and the workers-read-rows path (light reads hydrated in the worker, ScenesSource's
  light records included) give the same groups: both group whole, validated records;
- invalid records and repeated ids are rejected before grouping, so a sample never carries a question whose
  own record could not be read.

Within an image, the records are put in a seeded order and cut into samples of seeded sizes (1 to
`max_questions`, uniformly); the first record of a sample is its primary and carries the others as `siblings`.
Every other record leaves the run as a `merged` reject naming the primary, so `accepted + rejected == read`.
Records with the same image in different shards are not grouped: sources ordered by image (CLEVR, GQA, VQAv2
files, `scenes` with `questions_per_image`) group well, a shuffled source much less.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.config import GroupSpec
from ..core.records import SiblingQA, VQARecord
from .arrange import mix64

_SALT_GROUPS = 0x4752_4F55_5053_5331  # "GROUPSS1"


def _h64(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "big")


def image_key(record: VQARecord, spec: GroupSpec, image: bytes | None = None) -> str | None:
    """What identifies the record's image under `spec.by` (None: the record has nothing to group by, and stays
    alone). `image` is the record's validated image bytes when the caller has them."""
    meta = record.meta if isinstance(record.meta, dict) else {}

    def by_id() -> str | None:
        value = meta.get(spec.key)
        return None if value is None or value == "" else f"id:{value}"

    def by_path() -> str | None:
        return f"path:{record.image_path}" if record.image_path else None

    def by_content() -> str | None:
        data = image if image else record.image
        return f"sha256:{hashlib.sha256(data).hexdigest()}" if data else None

    if spec.by == "id":
        return by_id()
    if spec.by == "path":
        return by_path()
    if spec.by == "content":
        return by_content()
    return by_id() or by_path() or by_content()


@dataclass
class Group:
    """One sample's records, as positions in the shard: `primary` carries `siblings` (in this order)."""

    primary: int
    siblings: list[int] = field(default_factory=list)


def plan_groups(keys: Sequence[str | None], ids: Sequence[str], seed: int, max_questions: int) -> list[Group]:
    """The samples of a shard whose records have image keys `keys` and ids `ids`: records of one key are
    ordered by a seeded priority of their ids and cut into samples of seeded sizes in 1..max_questions.
    Groups come in the shard order of their primaries; positions without a key are single samples."""
    members: dict[str, list[int]] = {}
    groups: list[Group] = []
    for position, key in enumerate(keys):
        if key is None:
            groups.append(Group(position))
        else:
            members.setdefault(key, []).append(position)
    base = mix64(mix64(seed & ((1 << 64) - 1)) ^ _SALT_GROUPS)
    for key, positions in members.items():
        key_hash = mix64(base ^ _h64(key))
        ordered = sorted(positions, key=lambda p: (mix64(key_hash ^ _h64(ids[p])), p))
        draw = 0
        while ordered:
            size = 1 + mix64(key_hash ^ (draw + 1)) % max(1, max_questions)
            draw += 1
            chunk, ordered = ordered[:size], ordered[size:]
            groups.append(Group(chunk[0], chunk[1:]))
    groups.sort(key=lambda g: g.primary)
    return groups


def sibling_of(record: VQARecord) -> SiblingQA:
    """A record as another question about its primary's image: its own text and meta (for the offline world,
    `question_spec` and `answer_space` on the same scene), without the engine's `_` tags."""
    meta = record.meta if isinstance(record.meta, dict) else {}
    return SiblingQA(
        id=record.id,
        question=record.question,
        answer=record.answer,
        category=record.category,
        meta={k: v for k, v in meta.items() if not str(k).startswith("_")},
    )


def merged_detail(primary_id: str) -> str:
    """The `merged` reject's detail: the sample this record's question went into."""
    return f"merged into sample {primary_id} (same image; its question is a sibling there)"


def merged_into(detail: str | None) -> str | None:
    """The primary's sample id a `merged` reject's detail names (None for any other detail)."""
    prefix = "merged into sample "
    if not detail or not detail.startswith(prefix):
        return None
    return detail[len(prefix):].split(" ", 1)[0]


def group_records(records: Sequence[VQARecord], images: Sequence[bytes | None], spec: GroupSpec,
                  seed: int) -> list[tuple[int, str]]:
    """Group a shard's validated records (in shard order) in place: each primary's `siblings` are set. Returns
    (position, primary id) for every record merged into another's sample (the caller rejects them `merged`)."""
    keys = [image_key(record, spec, image) for record, image in zip(records, images, strict=True)]
    merged: list[tuple[int, str]] = []
    for group in plan_groups(keys, [r.id for r in records], seed, spec.max_questions):
        primary = records[group.primary]
        primary.siblings = [sibling_of(records[p]) for p in group.siblings]
        merged += [(p, primary.id) for p in group.siblings]
    return merged


def group_items(items: Sequence[Any], outcomes: Sequence[Any], spec: GroupSpec | None,
                seed: int) -> list[tuple[int, str]]:
    """The worker's side (items with `.record` and `.image`, those with an outcome already left): group the
    others and return (index, `merged` reject detail) for each record merged into another's sample. A merged
    record's row keeps no image bytes: its primary's row holds the image."""
    alive = [i for i, outcome in enumerate(outcomes) if outcome is None]
    if spec is None or not alive:
        return []
    merged = group_records([items[i].record for i in alive], [items[i].image for i in alive], spec, seed)
    out = []
    for position, primary in merged:
        item = items[alive[position]]
        item.image, item.record.image = b"", None
        out.append((alive[position], merged_detail(primary)))
    return out
