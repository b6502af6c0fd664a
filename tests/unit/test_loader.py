"""The torch datasets over runs and hf exports: shapes, ranges, masks/weights, DataLoader workers, sharding."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader  # noqa: E402

from tests.unit.synthetic_runs import make_sample, write_run  # noqa: E402
from uniedit_synth.export import export_run  # noqa: E402
from uniedit_synth.method.masks import region_weight  # noqa: E402
from uniedit_synth.train.loader import (  # noqa: E402
    EditPairDataset,
    EditPairIterableDataset,
    decode_rgb,
    shard_files,
    to_model_range,
)

pytestmark = pytest.mark.train

IMAGE_SIZE = 32
GRID = 8
ROWS = 10


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    samples = [make_sample(i, category=("color", "count")[i % 2]) for i in range(ROWS)]
    return write_run(tmp_path_factory.mktemp("loader") / "run", samples, shard_size=3)


@pytest.fixture(scope="module")
def hf_dir(run_dir: Path) -> Path:
    out = run_dir.parent / "hf"
    export_run(run_dir, out, "hf", row_group_rows=2, shard_rows=4, progress=False)
    return out


def check_item(item: dict) -> None:
    for key in ("source", "target"):
        tensor = item[key]
        assert tensor.shape == (3, IMAGE_SIZE, IMAGE_SIZE) and tensor.dtype == torch.uint8
    assert not torch.equal(item["source"], item["target"])
    assert item["instruction"].startswith("Paint the region") and item["question"] and item["answer"]
    mask = item["mask"]
    assert mask.shape == (GRID, GRID) and mask.dtype == torch.bool
    # the synthetic edit box (16..40 × 20..36 of 64 px) lands in cells 2..4 of an 8×8 grid; far corners stay clean
    assert mask[3:4, 2:5].all() and not mask[7, 0] and not mask[0, 7]
    assert item["weight"].dtype == torch.float32
    assert float(item["weight"]) == pytest.approx(region_weight(mask.numpy()))
    assert float(item["weight"]) == pytest.approx(math.log2(GRID * GRID / int(mask.sum())) + 1)


def test_finds_run_and_export_shards(run_dir: Path, hf_dir: Path) -> None:
    assert [p.name for p in shard_files(run_dir)] == [f"shard-0000{i}.parquet" for i in range(4)]
    assert all(p.name.startswith("train-") for p in shard_files(hf_dir))
    with pytest.raises(FileNotFoundError, match="no parquet shards"):
        shard_files(run_dir / "rejects" / "nothing-here")


@pytest.mark.parametrize("source", ["run", "hf"])
def test_map_style_items(source: str, run_dir: Path, hf_dir: Path) -> None:
    dataset = EditPairDataset(run_dir if source == "run" else hf_dir, image_size=IMAGE_SIZE, mask_grid=GRID)
    assert len(dataset) == ROWS
    ids = [dataset[i]["id"] for i in range(len(dataset))]
    assert sorted(ids) == [f"synth/{i:04d}" for i in range(ROWS)]
    check_item(dataset[-1])
    with pytest.raises(IndexError):
        dataset[ROWS]


@pytest.mark.parametrize("workers", [0, 2])
def test_map_style_dataloader(workers: int, hf_dir: Path) -> None:
    dataset = EditPairDataset(hf_dir, image_size=IMAGE_SIZE, mask_grid=GRID)
    dataset[0]  # fill the cache: it must not travel to the workers
    assert len(pickle.loads(pickle.dumps(dataset))._cache) == 0
    loader = DataLoader(
        dataset, batch_size=4, shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(0)
    )
    seen = []
    for batch in loader:
        assert batch["source"].shape[1:] == (3, IMAGE_SIZE, IMAGE_SIZE)
        assert batch["mask"].shape[1:] == (GRID, GRID) and batch["weight"].shape == (len(batch["id"]),)
        weight_map = torch.where(batch["mask"], batch["weight"][:, None, None], torch.tensor(1.0))
        assert (weight_map >= 1).all()
        seen += batch["id"]
    assert sorted(seen) == [f"synth/{i:04d}" for i in range(ROWS)]


@pytest.mark.parametrize("workers", [0, 2])
def test_iterable_covers_every_row_once_across_workers(workers: int, hf_dir: Path) -> None:
    dataset = EditPairIterableDataset(hf_dir, image_size=IMAGE_SIZE, mask_grid=GRID, seed=3, buffer_size=3)
    loader = DataLoader(dataset, batch_size=3, num_workers=workers)
    ids = []
    for batch in loader:
        ids += batch["id"]
        check_item({key: value[0] for key, value in batch.items()})
    assert sorted(ids) == [f"synth/{i:04d}" for i in range(ROWS)]


def test_iterable_shuffles_per_epoch_and_splits_ranks(run_dir: Path) -> None:
    def order(epoch: int, seed: int = 0, **kwargs) -> list[str]:
        dataset = EditPairIterableDataset(run_dir, image_size=16, mask_grid=4, seed=seed, **kwargs)
        dataset.set_epoch(epoch)
        return [item["id"] for item in dataset]

    assert order(0) == order(0)
    assert order(0) != order(1) and sorted(order(0)) == sorted(order(1))
    assert order(0, shuffle=False) == [f"synth/{i:04d}" for i in range(ROWS)]
    halves = [order(0, rank=rank, world_size=2) for rank in (0, 1)]
    assert not set(halves[0]) & set(halves[1]) and sorted(halves[0] + halves[1]) == sorted(order(0))


def test_stored_export_masks_are_used(run_dir: Path) -> None:
    """The export's stored `edit_mask` is what the loader yields, not a mask it recomputes from the pixels:
    every stored mask is replaced by one the images could never produce (only the bottom-right corner)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from uniedit_synth.method.masks import mask_to_png, max_pool

    out = run_dir.parent / "hf-masks"
    export_run(run_dir, out, "hf", with_masks=True, mask_grid=GRID, progress=False)
    planted = np.zeros((64, 64), dtype=bool)
    planted[56:, 60:] = True
    files = sorted(out.rglob("*.parquet"))
    assert files
    for path in files:
        table = pq.read_table(path)
        masks = table.column("edit_mask").to_pylist()
        assert all(m and m["bytes"] for m in masks)
        replaced = pa.array([{"bytes": mask_to_png(planted), "path": m["path"]} for m in masks],
                            type=table.schema.field("edit_mask").type)
        table = table.set_column(table.schema.get_field_index("edit_mask"), "edit_mask", replaced)
        pq.write_table(table, path)
    expected = max_pool(planted, GRID)
    assert expected.sum() == 1  # one cell of the grid
    items = list(EditPairDataset(out, image_size=IMAGE_SIZE, mask_grid=GRID))
    assert items
    for item in items:
        assert np.array_equal(item["mask"].numpy(), expected), item["id"]
        assert float(item["weight"]) == pytest.approx(math.log2(GRID * GRID) + 1)  # the weight follows it
    computed = EditPairDataset(run_dir, image_size=IMAGE_SIZE, mask_grid=GRID)[0]["mask"].numpy()
    assert not np.array_equal(computed, expected)  # recomputing from the pixels would not give it


def test_importing_the_package_does_not_import_torch() -> None:
    code = "import sys, uniedit_synth, uniedit_synth.method.masks, uniedit_synth.export, uniedit_synth.train; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_mask_weight_follow_the_loader_options(hf_dir: Path) -> None:
    linear = EditPairDataset(hf_dir, image_size=IMAGE_SIZE, mask_grid=GRID, weight_fn="linear")[0]
    assert float(linear["weight"]) == pytest.approx(GRID * GRID / int(linear["mask"].sum()))
    full = EditPairDataset(hf_dir, image_size=IMAGE_SIZE, mask_grid=None)[0]
    assert full["mask"].shape == (IMAGE_SIZE, IMAGE_SIZE)


def test_rejects_without_edits_are_not_in_the_run_data(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [make_sample(0)], [make_sample(1, accepted=False, with_edit=False)])
    assert [item["id"] for item in EditPairDataset(run, image_size=16, mask_grid=4)] == ["synth/0000"]


def test_float_pixels_are_the_uint8_ones_in_model_range(hf_dir: Path) -> None:
    """pixels="float" hands out what to_model_range makes of the default uint8 items: the same [-1, 1] values,
    channel for channel, as the RGB pixels of the stored images resized."""
    import numpy as np

    from uniedit_synth.method.masks import to_rgb

    raw = EditPairDataset(hf_dir, image_size=64, mask_grid=GRID)  # the stored size: no resize
    floats = EditPairDataset(hf_dir, image_size=64, mask_grid=GRID, pixels="float")
    for index in (0, len(raw) - 1):
        item, item_float = raw[index], floats[index]
        for key, column in (("source", "source_image"), ("target", "edited_image")):
            rgb = np.asarray(to_rgb(raw.row(index)[column]["bytes"]))
            assert np.array_equal(item[key].permute(1, 2, 0).numpy(), rgb)
            assert item_float[key].dtype == torch.float32
            assert torch.equal(item_float[key], to_model_range(item[key]))
        assert float(item_float["source"].min()) >= -1.0 and float(item_float["source"].max()) <= 1.0
        assert torch.equal(item_float["mask"], item["mask"])
    assert torch.equal(to_model_range(torch.tensor([0, 255], dtype=torch.uint8)), torch.tensor([-1.0, 1.0]))
    with pytest.raises(ValueError, match="pixels must be one of"):
        EditPairDataset(hf_dir, image_size=IMAGE_SIZE, pixels="fp16")
    with pytest.raises(TypeError, match="uint8 or floating-point"):
        to_model_range(torch.zeros(2, dtype=torch.int32))


def test_to_uint8_puts_each_channel_in_its_plane() -> None:
    """The in-place OpenCV split gives the planes a permute gives: contiguous, strided and PIL inputs, odd sizes."""
    import numpy as np
    from PIL import Image

    from uniedit_synth.train.loader import EditItemTransform

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, size=(17, 30, 3), dtype=np.uint8)
    for image in (pixels, pixels[:, ::-1], pixels[1::2, ::3], Image.fromarray(pixels)):
        planes = EditItemTransform.to_uint8(image)
        expected = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # a writable copy
        assert planes.dtype == torch.uint8 and planes.is_contiguous() and torch.equal(planes, expected)


@pytest.mark.parametrize(
    "mode,fmt,extra",
    [("RGB", "PNG", {}), ("RGBA", "PNG", {}), ("P", "PNG", {}), ("P", "PNG", {"transparency": 0}),
     ("RGB", "PNG", {"transparency": (10, 20, 30)}), ("L", "PNG", {}), ("LA", "PNG", {}), ("I;16", "PNG", {}),
     ("RGB", "JPEG", {}), ("CMYK", "JPEG", {})],
)
def test_fast_png_decode_matches_to_rgb(mode: str, fmt: str, extra: dict) -> None:
    """The OpenCV decode (8-bit RGB PNGs) and the PIL fallback (everything else) give what masks.to_rgb gives,
    transparency composited on white included."""
    import io

    import numpy as np
    from PIL import Image

    from uniedit_synth.method.masks import to_rgb

    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, size=(24, 20, 4), dtype=np.uint8)
    pixels[:4, :4, :3] = (10, 20, 30)
    pixels[::3, :, 3] = 0  # transparent rows for the alpha modes
    image = Image.fromarray(pixels, "RGBA")
    image = image.convert("RGB").quantize(16) if mode == "P" else image.convert(mode) if mode != "RGBA" else image
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **extra)
    data = buffer.getvalue()
    decoded = decode_rgb(data)
    assert decoded.dtype == np.uint8 and decoded.shape == (24, 20, 3)
    assert np.array_equal(decoded, np.asarray(to_rgb(data)))
