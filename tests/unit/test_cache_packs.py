"""Cache packs (issue 27 part 3): a final shard's replies go into one file, found by request key by every later
process, the loose copies leave at the sweep, and a redone shard's pack keeps every reply it ever had."""

from __future__ import annotations

from pathlib import Path

import pytest

from uniedit_synth.run.cache import PACKS, ResponseCache


def fill(cache: ResponseCache, keys: list[str]) -> None:
    for key in keys:
        cache.put(key, {"data": {"key": key}, "_call": {"cost_usd": 0.01, "latency_s": 1.0}}, key.encode() * 50)


def key(i: int) -> str:
    return f"{i:02x}" + "ab" * 31


def loose_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.entry")]


def test_packed_entries_are_found_by_key_after_the_sweep(tmp_path: Path):
    writer = ResponseCache(tmp_path)
    keys = [key(i) for i in range(20)]
    fill(writer, keys)
    assert writer.pack(3, keys[:10]) == 10
    # another shard; blanks skipped; a reply both shards used (key 0) is in both packs
    assert writer.pack(4, keys[10:] + ["", keys[0]]) == 11
    assert ResponseCache(tmp_path).sweep() == 20
    assert loose_files(tmp_path) == []
    assert sorted(p.name for p in (tmp_path / PACKS).iterdir()) == ["shard-00003.pack", "shard-00004.pack"]
    reader = ResponseCache(tmp_path)  # a later process
    for k in keys:
        entry = reader.get(k)
        assert entry is not None and entry.meta["data"] == {"key": k} and entry.payload == k.encode() * 50
    assert reader.peek(keys[5])[1]
    assert reader.get(key(99)) is None


def test_a_redone_shard_keeps_the_replies_of_its_earlier_pack(tmp_path: Path):
    cache = ResponseCache(tmp_path)
    fill(cache, [key(1), key(2)])
    cache.pack(7, [key(1), key(2)])
    cache.sweep()
    fill(cache, [key(3)])  # after a config change the shard uses one new reply and one old one
    cache.pack(7, [key(2), key(3)])
    cache.sweep()
    reader = ResponseCache(tmp_path)
    assert all(reader.get(key(i)) is not None for i in (1, 2, 3))


def test_a_pack_rewritten_under_a_reader_is_read_again(tmp_path: Path):
    cache = ResponseCache(tmp_path)
    fill(cache, [key(5), key(6)])
    cache.pack(1, [key(6)])
    cache.sweep()
    reader = ResponseCache(tmp_path)
    assert reader.get(key(6)) is not None  # the reader now holds the pack's index
    cache.pack(1, [key(5), key(6)])  # the shard redone: the pack is rewritten, key 6 moves
    cache.sweep()
    assert reader.get(key(6)) is not None and reader.get(key(6)).meta["data"] == {"key": key(6)}


def test_a_damaged_pack_is_a_miss_not_a_crash(tmp_path: Path):
    cache = ResponseCache(tmp_path)
    fill(cache, [key(8)])
    cache.pack(2, [key(8)])
    cache.sweep()
    pack = tmp_path / PACKS / "shard-00002.pack"
    pack.write_bytes(pack.read_bytes()[:-3])
    assert ResponseCache(tmp_path).get(key(8)) is None


def test_a_loose_entry_is_not_swept_when_its_pack_copy_differs(tmp_path: Path):
    cache = ResponseCache(tmp_path)
    fill(cache, [key(9)])
    cache.pack(2, [key(9)])
    cache.put(key(9), {"data": {"key": "a later, longer reply"}, "_call": {"cost_usd": 0.0, "latency_s": 0.0}},
              b"x" * 999)  # rewritten after packing: not the packed copy
    assert cache.sweep() == 0
    assert ResponseCache(tmp_path).get(key(9)).payload == b"x" * 999


def test_a_scan_of_the_cache_sees_packed_entries(tmp_path: Path):
    from uniedit_synth.report.inspect import _cache_headers

    cache = ResponseCache(tmp_path)
    fill(cache, [key(1), key(2)])
    cache.pack(0, [key(1)])
    cache.sweep()
    seen = dict(_cache_headers(ResponseCache(tmp_path)))
    assert set(seen) == {key(1), key(2)} and seen[key(1)]["data"] == {"key": key(1)}


# -- an image stored once: pack entries referencing the shard's parquet -------------------------------------
def png_bytes(i: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8)  # noise: incompressible
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def shard_file(run: Path, rel: str, images: list[bytes]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from uniedit_synth.core.records import IMAGE_STRUCT

    (run / rel).parent.mkdir(parents=True, exist_ok=True)
    cells = pa.array([{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(images)], IMAGE_STRUCT)
    pq.write_table(pa.table({"id": [str(i) for i in range(len(images))], "edited_image": cells}), run / rel,
                   row_group_size=4)


def edit_reply(cache: ResponseCache, k: str, image: bytes) -> None:
    cache.put(k, {"model": "m", "_call": {"cost_usd": 0.04, "latency_s": 2.0}}, image)


def test_a_packed_image_that_the_shard_holds_is_stored_once(tmp_path: Path):
    run = tmp_path
    cache = ResponseCache(run / "cache")
    images = [png_bytes(i) for i in range(10)]
    shard_file(run, "data/shard-00002.parquet", images[:6])
    shard_file(run, "attempts/shard-00002.parquet", images[6:9])
    for i, image in enumerate(images):  # image 9: an edit no shard file holds (turned down by a gate)
        edit_reply(cache, key(i), image)
    fill(cache, [key(20)])  # a text reply
    assert cache.pack(2, [key(i) for i in (*range(10), 20)],
                      ["data/shard-00002.parquet", "rejects/shard-00002.parquet", "attempts/shard-00002.parquet"],
                      b'{"id": "a", "stage": "edit", "key": "k"}\n') == 11
    assert ResponseCache(run / "cache").sweep() == 11
    pack = run / "cache" / PACKS / "shard-00002.pack"
    # only the image no shard file holds is in the pack: 9 of 10 images are referenced, not copied
    assert len(images[9]) < pack.stat().st_size < len(images[9]) + sum(map(len, images[:9])) / 4
    reader = ResponseCache(run / "cache")
    for i, image in enumerate(images):
        entry = reader.get(key(i))
        assert entry is not None and entry.payload == image and entry.meta["model"] == "m"
    assert reader.get(key(20)).payload == key(20).encode() * 50
    assert reader.pack_calls(2) == b'{"id": "a", "stage": "edit", "key": "k"}\n'


def packed_edits(run: Path, shard: int, n: int, calls: bytes = b"") -> tuple[ResponseCache, list[bytes]]:
    """`n` edit replies whose images shard `shard`'s data file holds, packed (as references) and swept."""
    cache = ResponseCache(run / "cache")
    images = [png_bytes(i) for i in range(n)]
    shard_file(run, f"data/shard-{shard:05d}.parquet", images)
    for i, image in enumerate(images):
        edit_reply(cache, key(i), image)
    cache.pack(shard, [key(i) for i in range(n)], [f"data/shard-{shard:05d}.parquet"], calls)
    cache.sweep()
    return cache, images


def test_a_reference_whose_image_is_gone_is_a_miss_not_a_wrong_reply(tmp_path: Path):
    _, images = packed_edits(tmp_path, 0, 3)
    shard_file(tmp_path, "data/shard-00000.parquet", [images[1], images[0], png_bytes(7)])  # rows moved, one new
    reader = ResponseCache(tmp_path / "cache")
    assert [reader.get(key(i)) for i in range(3)] == [None, None, None]
    assert reader.corrupt == 3


def test_materialize_puts_the_bytes_back_before_the_shard_files_go(tmp_path: Path):
    _, images = packed_edits(tmp_path, 1, 4, b"calls\n")
    assert ResponseCache(tmp_path / "cache").materialize() == 4
    (tmp_path / "data" / "shard-00001.parquet").unlink()
    reader = ResponseCache(tmp_path / "cache")
    assert [reader.get(key(i)).payload for i in range(4)] == images
    assert reader.pack_calls(1) == b"calls\n"
    assert ResponseCache(tmp_path / "cache").materialize() == 0  # nothing left to put back


def test_a_pack_of_the_first_format_is_still_read(tmp_path: Path):
    import json
    import struct

    cache = ResponseCache(tmp_path)
    fill(cache, [key(1)])
    blob = (tmp_path / key(1)[:2] / f"{key(1)}.entry").read_bytes()
    (tmp_path / key(1)[:2] / f"{key(1)}.entry").unlink()
    footer = json.dumps({key(1): [0, len(blob)]}).encode()
    (tmp_path / PACKS).mkdir()
    (tmp_path / PACKS / "shard-00000.pack").write_bytes(blob + footer + struct.pack("<Q", len(footer)) + b"UEPACK01")
    assert ResponseCache(tmp_path).get(key(1)).meta["data"] == {"key": key(1)}


# -- the same through runs ----------------------------------------------------------------------------------
FAST = {"engine": {"kind": "inline", "shard_size": 5},
        "backends": {"text": {"options": {"latency_s": 0}}, "editor": {"options": {"latency_s": 0}}}}


def edited_images(out: Path) -> dict[str, bytes]:
    import pyarrow.parquet as pq

    found = {}
    for kind in ("data", "rejects", "attempts"):
        for path in sorted((out / kind).glob("shard-*.parquet")):
            for row in pq.read_table(path, columns=["id", "attempts", "edited_image"]).to_pylist():
                if row["edited_image"]:
                    found[f"{kind}/{row['id']}/{row['attempts']}"] = row["edited_image"]["bytes"]
    return found


def test_a_run_stores_each_edited_image_once_and_a_config_change_reuses_every_reply(tmp_path: Path):
    from uniedit_synth import synth
    from uniedit_synth.run.cache import _split

    out = tmp_path / "run"
    first = synth("default", source="scenes", out=out, limit=15, overrides=FAST)
    assert first.shards_done == 3 and sum(first.calls.values()) > 0
    before = edited_images(out)
    assert not list((out / "cache").glob("??/*.entry")) and not (out / "cache" / "index").exists()
    stored_inline = set()
    for pack in (out / "cache" / PACKS).glob("*.pack"):
        from uniedit_synth.run import packs

        index = packs.read_index(pack)
        block = packs.read_block(pack, index)
        for slot in index.entries.values():
            blob = packs.read_entry(pack, slot, block)
            stored_inline.add(_split(blob)[1])
    assert before and not set(before.values()) & stored_inline  # no image of the shards is in a pack too
    changed = {**FAST, "stages": {"judge": {"thresholds": {"coherence": 4}}}}
    again = synth("default", source="scenes", out=out, limit=15, overrides=changed, force_new_config=True)
    assert again.shards_done == 3 and sum(again.calls.values()) == 0  # every reply from the cache
    assert sum(again.cache_hits.values()) == sum(first.calls.values()) + sum(first.cache_hits.values())
    after = edited_images(out)
    assert set(after.values()) <= set(before.values())  # the same pixels, read back from the packs


def noisy_source(path: Path, n: int) -> Path:
    """A parquet source whose images (and so edited images) are noise, too big to stay inside a pack."""
    import io

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from uniedit_synth.core.records import IMAGE_STRUCT

    images = []
    for i in range(n):
        pixels = np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        pixels[16:40, 16:40] = (200, 40, 40) if i % 2 else (40, 40, 200)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": f"{i}.png"})
    pq.write_table(pa.table({"id": [f"q{i}" for i in range(n)],
                             "question": [f"What colour is the square in picture {i}?" for i in range(n)],
                             "answer": ["red" if i % 2 else "blue" for i in range(n)],
                             "image": pa.array(images, IMAGE_STRUCT)}), path, row_group_size=5)
    return path


def test_a_withdrawn_shard_keeps_its_replies_for_when_its_rows_come_back(tmp_path: Path):
    from uniedit_synth import synth

    source = noisy_source(tmp_path / "vqa.parquet", 15)
    out = tmp_path / "run"
    first = synth("default", source=str(source), out=out, overrides=FAST)
    assert first.shards_done == 3 and first.calls.get("edit")
    assert len(edited_images(out)) >= 5 and min(map(len, edited_images(out).values())) > 4096  # referenced
    noisy_source(source, 5)  # shards 1 and 2 leave the output, their parquet files deleted
    assert synth("default", source=str(source), out=out, overrides=FAST).read == 5
    noisy_source(source, 15)
    back = synth("default", source=str(source), out=out, overrides=FAST)
    assert back.shards_done == 2 and sum(back.calls.values()) == 0


def test_a_sweep_of_some_packs_leaves_the_others_loose_entries(tmp_path: Path):
    cache = ResponseCache(tmp_path)
    keys = [key(i) for i in range(12)]
    fill(cache, keys)
    cache.pack(1, keys[:6])
    cache.pack(2, keys[6:])
    assert cache.pack_names() == ["shard-00001.pack", "shard-00002.pack"]
    assert cache.sweep(["shard-00002.pack", "shard-00009.pack"], prune=False) == 6  # a missing pack is skipped
    assert sorted(p.stem for p in loose_files(tmp_path)) == sorted(keys[:6])
    assert cache.sweep([], prune=True) == 0 and len(loose_files(tmp_path)) == 6
    assert cache.sweep() == 6 and loose_files(tmp_path) == [] and not list(tmp_path.glob("??"))


@pytest.mark.ray
def test_a_ray_run_sweeps_the_cache_on_its_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The end-of-run sweep (~2.4 file deletions a record) runs on the Ray workers: the driver, whose CPU bounds a
    cluster's size, is left only the emptied folders; every reply is still found by the next run."""
    from uniedit_synth import synth

    driver_sweeps: list[tuple] = []
    original = ResponseCache.sweep
    monkeypatch.setattr(ResponseCache, "sweep",
                        lambda self, *args, **kw: driver_sweeps.append(args) or original(self, *args, **kw))
    out = tmp_path / "run"
    ray_fast = {**FAST, "engine": {"kind": "ray", "workers": 2, "shard_size": 5}}
    first = synth("default", source="scenes", out=out, limit=15, overrides=ray_fast)
    assert first.shards_done == 3 and sum(first.calls.values()) > 0
    assert driver_sweeps == [([], True)]  # every pack's share was done by a worker
    assert not list((out / "cache").glob("??/*.entry")) and len(ResponseCache(out / "cache").pack_names()) == 3
    changed = {**FAST, "stages": {"judge": {"thresholds": {"coherence": 4}}}}
    again = synth("default", source="scenes", out=out, limit=15, overrides=changed, force_new_config=True)
    assert again.shards_done == 3 and sum(again.calls.values()) == 0  # every reply from the packs
