"""RankBatches: disjoint row groups per rank, whole epochs, lockstep ranks, one-process layouts, resumable."""

from __future__ import annotations

import itertools

import pytest

from uniedit_synth.train.sampler import RankBatches

GROUPS = [3, 2, 3, 2, 2, 3, 1, 2]  # rows per row group: 18 rows


def group_of(row: int, sampler: RankBatches) -> int:
    return next(g for g in range(len(GROUPS)) if sampler.starts[g] <= row < sampler.starts[g + 1])


@pytest.mark.parametrize("world", [1, 2, 3])
def test_ranks_read_disjoint_row_groups_every_epoch(world: int) -> None:
    samplers = [RankBatches(GROUPS, batch_size=2, world_size=world, ranks=[r], seed=7) for r in range(world)]
    steps = samplers[0].batches_per_epoch
    assert all(s.batches_per_epoch == steps for s in samplers)  # lockstep
    for epoch in range(3):
        seen = [set() for _ in range(world)]
        for rank, sampler in enumerate(samplers):
            for k in range(steps):
                batch = sampler.batch(epoch * steps + k)
                assert len(batch) == 2
                seen[rank].update(batch)
                assert {group_of(row, sampler) for row in batch} <= set(sampler.groups(epoch, rank))
        for a, b in itertools.combinations(range(world), 2):
            assert not seen[a] & seen[b]
        assert all(len(rows) == 2 * steps for rows in seen)  # no row twice within an epoch
        groups = [g for rank in range(world) for g in samplers[0].groups(epoch, rank)]
        assert sorted(groups) == list(range(len(GROUPS)))
    assert samplers[0].groups(0, 0) != samplers[0].groups(1, 0)  # reshuffled per epoch


def test_one_process_layout_reads_what_the_ranks_read() -> None:
    layout = RankBatches(GROUPS, batch_size=2, world_size=2, seed=1)
    ranks = [RankBatches(GROUPS, batch_size=2, world_size=2, ranks=[r], seed=1) for r in range(2)]
    for position in range(10):
        assert layout.batch(position) == ranks[0].batch(position) + ranks[1].batch(position)


def test_iteration_starts_at_the_saved_position() -> None:
    full = list(itertools.islice(iter(RankBatches(GROUPS, batch_size=3, seed=2)), 12))
    resumed = list(itertools.islice(iter(RankBatches(GROUPS, batch_size=3, seed=2, start=7)), 5))
    assert resumed == full[7:]


def test_too_little_data_for_the_ranks_is_an_error() -> None:
    with pytest.raises(ValueError, match="fewer than its micro-batch"):
        RankBatches([2, 2], batch_size=3, world_size=2, ranks=[0])
