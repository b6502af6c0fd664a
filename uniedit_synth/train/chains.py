"""A torch dataset of whole multi-turn chains (`--turns N` runs) over a run dir or an `hf` export.

Each item is one chain, its turns in order::

    {"chain_id": str, "turns": [item of turn 1, item of turn 2, ...]}

where each turn's item is what ``EditPairDataset`` yields for that row (loader.py): turn i's ``source`` is turn
i-1's ``target``. Rows of a run made without chains (or before the chain columns) are one-turn chains. Where a
filter left a gap in a chain (an export with ``--min-score``), the turns up to the gap form the chain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from torch.utils.data import Dataset

from .loader import CACHE_BYTES, EditItemTransform, _GroupCache, _row_groups, shard_files


class EditChainDataset(Dataset):
    """Map-style dataset with one item per chain (see the module docstring); `min_turns` leaves out shorter
    chains. Use ``collate_fn=list`` (or your own) with a DataLoader: chains differ in length."""

    def __init__(
        self,
        path: str | Path,
        *,
        split: str = "train",
        min_turns: int = 1,
        transform: EditItemTransform | None = None,
        cache_bytes: int = CACHE_BYTES,
        **transform_options: Any,
    ) -> None:
        self.files = shard_files(path, split)
        self.groups = _row_groups(self.files)
        turns: dict[str, list[tuple[int, int, int]]] = {}  # chain id -> [(turn, group unit, row in group)]
        for unit, (file, group, _rows) in enumerate(self.groups):
            with pq.ParquetFile(file) as parquet:
                names = set(parquet.schema_arrow.names)
                columns = ["id"] + [c for c in ("chain_id", "turn") if c in names]
                table = parquet.read_row_group(group, columns=columns).to_pylist()
            for offset, row in enumerate(table):
                chain = row.get("chain_id") or row["id"]
                turns.setdefault(chain, []).append((int(row.get("turn") or 1), unit, offset))
        self.chains: list[tuple[str, list[tuple[int, int]]]] = []
        for chain, found in turns.items():
            found.sort()
            prefix = [found[0]]
            for entry in found[1:]:
                if entry[0] != prefix[-1][0] + 1:
                    break
                prefix.append(entry)
            if len(prefix) >= min_turns:
                self.chains.append((chain, [(unit, offset) for _turn, unit, offset in prefix]))
        self.chains.sort(key=lambda c: c[0])
        self.transform = transform or EditItemTransform(**transform_options)
        self._cache = _GroupCache(cache_bytes)

    def __len__(self) -> int:
        return len(self.chains)

    def rows(self, index: int) -> list[dict[str, Any]]:
        """The chain's raw parquet rows in turn order (images undecoded)."""
        _chain, places = self.chains[index]
        out = []
        for unit, offset in places:
            file, group, _rows = self.groups[unit]
            out.append(self._cache.get(file, group).slice(offset, 1).to_pylist()[0])
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"chain_id": self.chains[index][0], "turns": [self.transform(row) for row in self.rows(index)]}
