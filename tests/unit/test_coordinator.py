import asyncio

from uniedit_synth.engine.coordinator import Bucket, Coordinator


def test_bucket_spaces_requests_to_rpm():
    bucket = Bucket(rpm=60, tpm=None)
    delays = [bucket.reserve(100.0, 0) for _ in range(5)]
    # one interval of burst, then one request per second
    assert delays == [0.0, 0.0, 1.0, 2.0, 3.0]


def test_bucket_tokens_per_minute():
    bucket = Bucket(rpm=None, tpm=600)  # 10 tokens/s
    assert bucket.reserve(0.0, 100) == 0.0
    assert bucket.reserve(0.0, 100) == 0.0
    assert bucket.reserve(0.0, 100) == 10.0


def test_pause_holds_every_caller():
    bucket = Bucket(rpm=600, tpm=None)
    bucket.pause(50.0, 5.0)
    assert bucket.reserve(51.0, 0) >= 4.0


def test_category_caps_are_decided_in_shard_order():
    async def scenario():
        coord = Coordinator(rate_limits={}, category_caps={"color": 3})
        for shard in (0, 1, 2):
            await coord.register_shard(shard)
        # shard 2 and 1 classify first, but shard 0 must be decided before them
        later = asyncio.ensure_future(coord.admit(2, ["color", "color"]))
        middle = asyncio.ensure_future(coord.admit(1, ["color", "count"]))
        await asyncio.sleep(0.01)
        assert not later.done() and not middle.done()
        first = await coord.admit(0, ["color", "color"])
        return first, await middle, await later

    first, middle, later = asyncio.run(scenario())
    assert first == [True, True]
    assert middle == [True, True]
    assert later == [False, False]


def test_finished_shards_count_towards_caps():
    async def scenario():
        coord = Coordinator(rate_limits={}, category_caps={"*": 2})
        await coord.register_shard(0, {"ocr": 2})
        await coord.register_shard(1)
        return await coord.admit(1, ["ocr", "math"])

    assert asyncio.run(scenario()) == [False, True]


def test_budget():
    async def scenario():
        coord = Coordinator(rate_limits={}, max_cost_usd=1.0, spent_before_usd=0.5)
        assert await coord.budget_left()
        assert not await coord.spend(0.6)
        return await coord.budget_left()

    assert asyncio.run(scenario()) is False
