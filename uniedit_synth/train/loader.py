"""Torch datasets over a run dir or an `hf` export: source/target tensors, instruction, VQA pair, edit mask, weight.

Two flavours over the same rows and the same item dicts:

* ``EditPairDataset`` (map-style): random access by index; the DataLoader shuffles (``shuffle=True``). An
  access reads the parquet row group holding the row, undecoded, into a per-process cache bounded by
  ``cache_bytes`` (256 MB), so a dataset that fits is read once per worker; past that, small row groups
  (run shards: 16 rows) keep a miss cheap.
* ``EditPairIterableDataset``: streams row groups in a seeded, per-epoch shuffled order (across all shards),
  splits them between DataLoader workers (``get_worker_info``) and, if asked, between distributed ranks, and
  shuffles rows within a buffer. Every row is yielded exactly once per epoch over all workers. Row groups
  read are kept for the next epoch within the same ``cache_bytes`` budget.

Each item::

    {"id": str, "source": uint8[3,H,W] in 0..255, "target": uint8[3,H,W] in 0..255,
     "instruction": str, "question": str, "answer": str,
     "mask": bool[h,w] (the edit mask at ``mask_grid``), "weight": float32 scalar (w of masks.region_weight)}

Pixels stay uint8 by default (``pixels="uint8"``): a quarter of the bytes a float item has to cross from the
DataLoader workers, and the float conversion runs where it is cheapest, on the accelerator::

    source = to_model_range(batch["source"].to(device, non_blocking=True))   # float [-1, 1]

``pixels="float"`` makes the workers hand out float32 in [-1, 1] instead (about half the samples/s on 2 cores,
``benchmarks/loader.py``).

The per-token/pixel weight map is ``torch.where(mask, weight, 1.0)``. Masks come from masks.edit_mask on the
pair at the smaller of its stored size and the item size, or from the export's ``edit_mask`` column when it
has one. Images are resized with OpenCV (bicubic up, area down). Parquet files are opened lazily in
whichever process reads them: nothing that holds a file handle is pickled to workers.

Local directories only: a run on object storage (``--out s3://…``) is read by ``uniedit export``; export it
first and point the loader at the export.
"""

from __future__ import annotations

import bisect
import random
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from ..core.png import SIGNATURE
from ..method.masks import (
    DEFAULT_CLOSE_KERNEL,
    DEFAULT_MIN_COMPONENT_FRAC,
    DEFAULT_THRESHOLD,
    Grid,
    WeightFn,
    edit_mask,
    mask_from_image,
    max_pool,
    region_weight,
    to_rgb,
)

# DataLoader workers are the parallelism: OpenCV's own thread pool would oversubscribe the cores, and a pool
# started in the parent process deadlocks OpenCV calls in forked workers
cv2.setNumThreads(1)

PIXELS = ("uint8", "float")
COLUMNS = ("id", "edit_instruction", "original_question", "original_answer", "source_image", "edited_image")
OPTIONAL_COLUMNS = ("edit_mask",)
#: both datasets' default budget for undecoded row groups kept per process
CACHE_BYTES = 256 * 2**20


def shard_files(path: str | Path, split: str = "train") -> list[Path]:
    """The parquet files of a run dir (`data/shard-*.parquet`), an hf export (`data/<split>-*.parquet`), a
    directory of parquet files, or a single parquet file."""
    root = Path(path).expanduser()
    if root.is_file():
        return [root]
    for pattern in ("data/shard-*.parquet", f"data/{split}-*.parquet", "*.parquet"):
        files = sorted(root.glob(pattern))
        if files:
            return files
    raise FileNotFoundError(
        f"no parquet shards under {root} (looked for data/shard-*.parquet, data/{split}-*.parquet, *.parquet); "
        "pass a run dir or an `uniedit export --format hf` dir"
    )


def decode_rgb(data: bytes) -> np.ndarray:
    """HxWx3 uint8 RGB pixels of encoded image bytes, as ``masks.to_rgb`` gives them. An 8-bit RGB PNG (what
    runs and exports hold) is decoded by OpenCV, a fifth faster than PIL; anything else (alpha, palette with
    transparency, grey, 16-bit, JPEG with its EXIF and colour-space rules) goes through ``to_rgb``."""
    if data[:8] == SIGNATURE:
        pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        # a colour-keyed (tRNS) RGB or palette PNG comes back with 4 channels and takes the to_rgb path
        if pixels is not None and pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3:
            return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    return np.asarray(to_rgb(data))


def to_model_range(pixels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 pixels (0..255, any shape, any device) → ``dtype`` in [-1, 1], the range the items had with
    ``pixels="float"``; a floating-point tensor is taken to be in that range already and is only cast."""
    if pixels.is_floating_point():
        return pixels.to(dtype)
    if pixels.dtype != torch.uint8:
        raise TypeError(f"expected uint8 or floating-point pixels, got {pixels.dtype}")
    scaled = pixels.to(torch.float32).div_(127.5).sub_(1.0)  # in float32, then to a narrower dtype if asked
    return scaled if dtype == torch.float32 else scaled.to(dtype)


def _row_groups(files: list[Path]) -> list[tuple[str, int, int]]:
    """(path, row group, rows) for every non-empty row group of the files."""
    groups = []
    for path in files:
        meta = pq.ParquetFile(path).metadata
        for group in range(meta.num_row_groups):
            rows = meta.row_group(group).num_rows
            if rows:
                groups.append((str(path), group, rows))
    return groups


class _GroupCache:
    """Undecoded row groups read in this process, least recently used dropped first past `max_bytes` (or
    `max_groups`): a dataset that fits is read from disk once per worker, not once per row or per epoch."""

    def __init__(self, max_bytes: int, max_groups: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_groups = max_groups
        self._tables: OrderedDict[tuple[str, int], pa.Table] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._tables)

    def get(self, path: str, group: int) -> pa.Table:
        key = (path, group)
        table = self._tables.get(key)
        if table is not None:
            self._tables.move_to_end(key)
            return table
        table = self._tables[key] = _read_group(path, group)
        self._bytes += table.nbytes
        while len(self._tables) > 1 and (
            self._bytes > self.max_bytes or (self.max_groups is not None and len(self._tables) > self.max_groups)
        ):
            _key, dropped = self._tables.popitem(last=False)
            self._bytes -= dropped.nbytes
        return table

    def __getstate__(self) -> dict[str, Any]:
        # read tables stay in the process that read them: a DataLoader worker starts with an empty cache
        return {**self.__dict__, "_tables": OrderedDict(), "_bytes": 0}


def _read_group(path: str, group: int) -> pa.Table:
    with pq.ParquetFile(path) as parquet:
        names = set(parquet.schema_arrow.names)
        missing = [col for col in COLUMNS if col not in names]
        if missing:
            raise ValueError(f"{path} lacks columns {missing}: not a uniedit run shard or hf export")
        columns = list(COLUMNS) + [col for col in OPTIONAL_COLUMNS if col in names]
        return parquet.read_row_group(group, columns=columns)


class EditItemTransform:
    """A raw parquet row (undecoded image structs) → the training item dict."""

    def __init__(
        self,
        image_size: int | tuple[int, int] = 256,
        mask_grid: Grid | None = 16,
        weight_fn: WeightFn = "log",
        mask_threshold: int = DEFAULT_THRESHOLD,
        mask_close_kernel: int = DEFAULT_CLOSE_KERNEL,
        mask_min_component_frac: float = DEFAULT_MIN_COMPONENT_FRAC,
        pixels: str = "uint8",
    ) -> None:
        if pixels not in PIXELS:
            raise ValueError(f"pixels must be one of {PIXELS}, got {pixels!r}")
        self.pixels = pixels
        height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
        self.size = (int(width), int(height))  # PIL order
        self.mask_grid = mask_grid
        self.weight_fn = weight_fn
        self.mask_threshold = mask_threshold
        self.mask_close_kernel = mask_close_kernel
        self.mask_min_component_frac = mask_min_component_frac

    @staticmethod
    def _decode(struct: dict[str, Any] | None, what: str, sample_id: str) -> np.ndarray:
        if not struct or struct.get("bytes") is None:
            raise ValueError(f"sample {sample_id!r} has no {what} image bytes")
        return decode_rgb(struct["bytes"])

    def _resize(self, image: np.ndarray) -> np.ndarray:
        """To the item size with OpenCV (several times faster than PIL, which dominated the loader's CPU):
        bicubic when enlarging, area averaging (anti-aliased) when shrinking."""
        width, height = self.size
        if image.shape[1] == width and image.shape[0] == height:
            return image
        shrink = image.shape[1] > width or image.shape[0] > height
        return cv2.resize(image, self.size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)

    @staticmethod
    def to_uint8(image: Image.Image | np.ndarray) -> torch.Tensor:
        """[3,H,W] uint8 from an RGB image (PIL or HxWx3 uint8). OpenCV's split is handed the tensor's planes as
        its outputs and writes them in place: a quarter of the time of a strided permute copy, or of a split into
        new arrays copied over (0.05 vs 0.2 ms at 512 px)."""
        array = np.asarray(image, dtype=np.uint8)
        height, width = array.shape[:2]
        planes = torch.empty((3, height, width), dtype=torch.uint8)
        views = list(planes.numpy())
        for view, plane in zip(views, cv2.split(array, views), strict=True):
            if plane is not view:  # an OpenCV that allocated its own outputs after all
                view[...] = plane
        return planes

    @classmethod
    def to_tensor(cls, image: Image.Image | np.ndarray) -> torch.Tensor:
        """[3,H,W] float32 in [-1, 1] from an RGB image (PIL or HxWx3 uint8)."""
        return to_model_range(cls.to_uint8(image))

    def _mask(self, row: dict[str, Any], source: np.ndarray, target: np.ndarray) -> np.ndarray:
        """The edit mask at `mask_grid` (or at the item size). Computed on the stored pair when it is no larger
        than the item size (an enlarged pair holds no more detail, and 4x the pixels cost 4x the CPU), else on
        the resized pair."""
        full = (self.size[1], self.size[0])
        stored = row.get("edit_mask")
        if stored and stored.get("bytes") is not None:
            return max_pool(mask_from_image(stored["bytes"]), self.mask_grid or full)
        if source.shape[0] > full[0] or source.shape[1] > full[1]:
            source, target = self._resize(source), self._resize(target)
        mask = edit_mask(
            source,
            target,
            threshold=self.mask_threshold,
            close_kernel=self.mask_close_kernel,
            min_component_frac=self.mask_min_component_frac,
            vae_factor=1,  # a None grid means full resolution here
            grid=self.mask_grid,
        )
        if self.mask_grid is None and mask.shape != full:
            mask = cv2.resize(mask.astype(np.uint8), self.size, interpolation=cv2.INTER_NEAREST).astype(bool)
        return mask

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        sample_id = row["id"]
        source = self._decode(row["source_image"], "source", sample_id)
        target = self._decode(row["edited_image"], "edited", sample_id)
        mask = self._mask(row, source, target)
        source, target = self._resize(source), self._resize(target)
        pixels = self.to_uint8 if self.pixels == "uint8" else self.to_tensor
        return {
            "id": sample_id,
            "source": pixels(source),
            "target": pixels(target),
            "instruction": row.get("edit_instruction") or "",
            "question": row.get("original_question") or "",
            "answer": row.get("original_answer") or "",
            "mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=bool)),
            "weight": torch.tensor(region_weight(mask, self.weight_fn), dtype=torch.float32),
        }


class EditPairDataset(Dataset):
    """Map-style dataset over every row of a run dir or hf export (see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        *,
        split: str = "train",
        transform: EditItemTransform | None = None,
        cache_row_groups: int | None = None,
        cache_bytes: int = CACHE_BYTES,
        **transform_options: Any,
    ) -> None:
        self.files = shard_files(path, split)
        self.groups = _row_groups(self.files)
        self.starts = [0]
        for _path, _group, rows in self.groups:
            self.starts.append(self.starts[-1] + rows)
        self.transform = transform or EditItemTransform(**transform_options)
        # shuffled access hits row groups at random: keep as many (undecoded) as the byte budget allows
        self._cache = _GroupCache(cache_bytes, cache_row_groups)

    def __len__(self) -> int:
        return self.starts[-1]

    def row(self, index: int) -> dict[str, Any]:
        """The raw parquet row at index (images undecoded)."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} rows")
        unit = bisect.bisect_right(self.starts, index) - 1
        path, group, _rows = self.groups[unit]
        return self._cache.get(path, group).slice(index - self.starts[unit], 1).to_pylist()[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.transform(self.row(index))


class EditPairIterableDataset(IterableDataset):
    """Streaming dataset: row groups shuffled per epoch across all shards, split over workers (and ranks)."""

    def __init__(
        self,
        path: str | Path,
        *,
        split: str = "train",
        shuffle: bool = True,
        seed: int = 0,
        buffer_size: int = 64,
        rank: int = 0,
        world_size: int = 1,
        transform: EditItemTransform | None = None,
        cache_bytes: int = CACHE_BYTES,
        **transform_options: Any,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.files = shard_files(path, split)
        self.groups = _row_groups(self.files)
        self.shuffle = shuffle
        self.seed = seed
        self.buffer_size = max(1, buffer_size)
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.transform = transform or EditItemTransform(**transform_options)
        # a worker's row groups of one epoch, kept for the next while they fit in `cache_bytes`
        self._cache = _GroupCache(cache_bytes)

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffle order (call before each epoch, as with DistributedSampler)."""
        self.epoch = epoch

    @property
    def num_rows(self) -> int:
        """Rows over all ranks and workers (a rank sees about 1/world_size of them per epoch)."""
        return sum(rows for _path, _group, rows in self.groups)

    def _my_groups(self) -> list[tuple[str, int, int]]:
        groups = list(self.groups)
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(groups)
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        slots = self.world_size * workers
        return groups[self.rank * workers + worker :: slots]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        rng = random.Random((self.seed * 1_000_003 + self.epoch) * 1_009 + self.rank * 101 + worker)
        buffer: list[dict[str, Any]] = []
        for path, group, _rows in self._my_groups():
            for row in self._cache.get(path, group).to_pylist():
                if not self.shuffle:
                    yield self.transform(row)
                    continue
                buffer.append(row)
                if len(buffer) >= self.buffer_size:
                    yield self.transform(buffer.pop(rng.randrange(len(buffer))))
        rng.shuffle(buffer)
        for row in buffer:
            yield self.transform(row)
