"""Cache packs (issue 27 part 3): a final shard's replies go into one file, found by request key by every later
process, the loose copies leave at the sweep, and a redone shard's pack keeps every reply it ever had."""

from __future__ import annotations

from pathlib import Path

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
