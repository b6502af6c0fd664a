"""Small synthetic run directories for export / loader / fine-tune tests (no engine involved)."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw

from uniedit_synth.core.records import RejectReason, Sample, Scores, samples_to_table
from uniedit_synth.method.plan import InstructionPlan
from uniedit_synth.run.store import RunDir, write_shard_table

SIZE = 64
#: the rectangle every synthetic edit recolours: (left, top, right, bottom), right/bottom exclusive
EDIT_BOX = (16, 20, 40, 36)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def image_pair(seed: int, box: tuple[int, int, int, int] = EDIT_BOX, size: int = SIZE) -> tuple[bytes, bytes]:
    """A flat background with a few shapes, and the same image with `box` filled in a new colour."""
    background = (40 + 7 * (seed % 20), 90, 160 - 3 * (seed % 30))
    source = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(source)
    draw.ellipse((2, 2, 14, 14), fill=(250, 250, 250))
    draw.rectangle((48, 44, 60, 60), fill=(0, 0, 0))
    edited = source.copy()
    ImageDraw.Draw(edited).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=(255, 230 - seed % 50, 0))
    return png(source), png(edited)


def make_sample(
    index: int,
    *,
    sample_id: str | None = None,
    category: str = "color",
    score: float = 4.0,
    accepted: bool = True,
    instruction: str | None = None,
    with_edit: bool = True,
    shard: int = 0,
    box: tuple[int, int, int, int] = EDIT_BOX,
) -> Sample:
    source, edited = image_pair(index, box)
    reason = None if accepted else RejectReason.low_score
    return Sample(
        id=sample_id or f"synth/{index:04d}",
        source="synth",
        shard=shard,
        task_category=category,
        original_question=f"What colour is object {index}?",
        original_answer=f"colour-{index % 5}",
        process_answer=f"The object is colour-{index % 5}.",
        edit_instruction=instruction or f"Paint the region that answers question {index} in yellow.",
        source_image=source,
        edited_image=edited if with_edit else None,
        scores=Scores(instruction_following=score, visual_quality=score, coherence=score),
        score=score,
        analysis=f"analysis {index}",
        accepted=accepted,
        reject_reason=reason,
        instruction_plan=(
            InstructionPlan(
                style="conditional",
                candidate=f"colour-{index % 5}",
                candidate_is_answer=True,
                expected_branch="then",
                then_edit="paint the region yellow",
                else_edit="paint the region blue",
            )
            if index % 2 == 0
            else InstructionPlan(style="synthesis")
        ),
    )


def write_run(
    root: Path, accepted: list[Sample], rejected: list[Sample] | None = None, shard_size: int = 4
) -> Path:
    """A run dir as the engine writes it (store.RunDir / write_shard_table): data/ and rejects/ shards,
    manifest.jsonl, run.json, stats.json."""
    rejected = rejected or []
    run = RunDir(root)
    run.create_dirs()
    shards = max(1, -(-len(accepted) // shard_size), -(-len(rejected) // shard_size))
    for shard in range(shards):
        good = accepted[shard * shard_size : (shard + 1) * shard_size]
        bad = rejected[shard * shard_size : (shard + 1) * shard_size]
        files = {
            "data": write_shard_table(root, "data", shard, samples_to_table(good)),
            "rejects": write_shard_table(root, "rejects", shard, samples_to_table(bad)),
        }
        run.append_manifest(
            {"shard": shard, "records": len(good) + len(bad), "accepted": len(good), "files": files}
        )
    run.write_run_json({"pipeline_hash": "test-hash", "started_at": "2026-01-01T00:00:00Z"})
    run.write_stats()
    return root
