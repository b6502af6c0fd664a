import io
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from uniedit_synth.core.records import (
    SAMPLE_SCHEMA,
    RejectReason,
    Sample,
    Scores,
    row_to_sample,
    samples_to_table,
)
from uniedit_synth.run.store import write_shard_table


def png(color=(200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), color).save(buf, format="PNG")
    return buf.getvalue()


def make_samples() -> list[Sample]:
    return [
        Sample(id="src/b", source="src", shard=0, original_question="q?", original_answer="a",
               edit_instruction="If ..., paint it gold.", source_image=png(), edited_image=png((1, 2, 3)),
               scores=Scores(instruction_following=5, visual_quality=4, coherence=4), score=4.33,
               accepted=True, prompt_versions={"judge": "judge.txt@abc"}, edit_program={"op": "recolor"}),
        Sample(id="src/a", source="src", shard=0, original_question="q2?", original_answer="b",
               source_image=png(), accepted=False, reject_reason=RejectReason.leaks_answer, reject_detail="'b'"),
    ]


def test_table_sorted_by_id_and_roundtrips():
    table = samples_to_table(make_samples())
    assert table.schema.equals(SAMPLE_SCHEMA, check_metadata=True)
    assert table.column("id").to_pylist() == ["src/a", "src/b"]
    back = row_to_sample(table.to_pylist()[1])
    assert back.edit_program == {"op": "recolor"} and back.prompt_versions == {"judge": "judge.txt@abc"}
    assert back.edited_image == png((1, 2, 3))


def test_datasets_loads_shards_as_pil_images(tmp_path: Path):
    import datasets

    (tmp_path / "data").mkdir()
    record = write_shard_table(tmp_path, "data", 7, samples_to_table(make_samples()))
    assert record["path"] == "data/shard-00007.parquet" and record["rows"] == 2
    assert pq.read_schema(tmp_path / record["path"]).metadata[b"huggingface"]
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "data" / "*.parquet"), split="train")
    row = ds[1]
    assert isinstance(row["source_image"], Image.Image) and row["source_image"].size == (16, 12)
    assert isinstance(row["edited_image"], Image.Image)
    assert ds[0]["edited_image"] is None
    assert row["scores"]["instruction_following"] == 5
