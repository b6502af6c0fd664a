"""Deterministic, resumable micro-batches over parquet row groups, split between distributed ranks.

A training step needs three things from its data order that a shuffling DataLoader does not give: every rank
reads a disjoint part of each epoch (whole row groups, so a rank opens only its own groups), every rank takes
the same number of steps (DDP/FSDP run in lockstep), and the position is one integer, so a checkpoint can
store it and a resumed run reads exactly the batches an uninterrupted one would have read.

``RankBatches`` does that over the row groups of ``EditPairDataset`` (``dataset.groups``): epoch ``e`` shuffles
the row-group order with ``(seed, e)``; rank ``r`` of ``W`` takes every ``W``-th group, its rows shuffled within
each group; micro-batch ``k`` of the epoch is rows ``[k*b, (k+1)*b)`` of the rank's list, and an epoch has as many
micro-batches as the smallest share a rank can draw can fill (rows past it wait for a later epoch). The position ``p`` (micro-batches consumed so far) maps to epoch
``p // batches_per_epoch``. It serves one rank (``ranks=[r]``) or several at once (``ranks=range(W)``: one process
reads what W ranks would read, concatenated — the same global batch as a W-rank run).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from functools import lru_cache


class RankBatches:
    """Index batches for `ranks` of `world_size`, from micro-batch `start` on (usable as a `batch_sampler`)."""

    def __init__(
        self,
        group_rows: Sequence[int],
        *,
        batch_size: int,
        world_size: int = 1,
        ranks: Sequence[int] | None = None,
        seed: int = 0,
        shuffle: bool = True,
        start: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        ranks = list(range(world_size)) if ranks is None else list(ranks)
        if not ranks or any(not 0 <= r < world_size for r in ranks):
            raise ValueError(f"ranks {ranks} outside world_size {world_size}")
        self.group_rows = list(group_rows)
        self.starts = [0]
        for rows in self.group_rows:
            self.starts.append(self.starts[-1] + rows)
        self.batch_size = batch_size
        self.world_size = world_size
        self.ranks = ranks
        self.seed = seed
        self.shuffle = shuffle
        self.start = start
        self._rank_rows = lru_cache(maxsize=2 * world_size)(self._rows_uncached)
        # the fewest rows any rank can draw in any epoch (floor(G/W) of the smallest groups): a constant, so the
        # position maps to (epoch, batch) without replaying earlier epochs, and every epoch has the same length
        fewest = sum(sorted(self.group_rows)[: len(self.group_rows) // world_size])
        self.batches_per_epoch = fewest // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"a rank may get only {fewest} rows per epoch ({len(self.group_rows)} row groups over "
                f"{world_size} ranks), fewer than its micro-batch of {batch_size}: use more data, smaller "
                "row groups, fewer workers or a smaller batch"
            )

    def groups(self, epoch: int, rank: int) -> list[int]:
        """The row groups rank `rank` reads in `epoch`, in reading order."""
        order = list(range(len(self.group_rows)))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order[rank :: self.world_size]

    def _rows_uncached(self, epoch: int, rank: int) -> list[int]:
        rows: list[int] = []
        for group in self.groups(epoch, rank):
            members = list(range(self.starts[group], self.starts[group + 1]))
            if self.shuffle:
                random.Random((self.seed * 1_000_003 + epoch) * 1_009 + group).shuffle(members)
            rows.extend(members)
        return rows

    def batch(self, position: int) -> list[int]:
        """Row indices of micro-batch `position` (counted from the start of training) for this sampler's ranks."""
        epoch, k = divmod(position, self.batches_per_epoch)
        span = slice(k * self.batch_size, (k + 1) * self.batch_size)
        return [row for rank in self.ranks for row in self._rank_rows(epoch, rank)[span]]

    def __iter__(self) -> Iterator[list[int]]:
        position = self.start
        while True:
            yield self.batch(position)
            position += 1
