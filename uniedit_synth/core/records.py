"""The data contracts: VQARecord in, Sample out, and the one Arrow schema every shard is written with."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, create_model

from .plan import InstructionPlan
from .reasons import RejectReason
from .stage_table import MODEL_ROLES

TASK_CATEGORIES = (
    "shape",
    "count",
    "color",
    "location",
    "knowledge",
    "caption",
    "ocr",
    "math",
    "multi-choice",
    "yes_no",
    "others",
)


class SiblingQA(BaseModel):
    """Another question about the same image, merged into a record by `source.group_by_image`: the plan may
    embed it beside the record's own question (a second condition, or the parameter of a branch)."""

    id: str
    question: str
    answer: str
    category: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class VQARecord(BaseModel):
    """One VQA pair as a source hands it over. `invalid` is set when the source already knows it is unusable."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    id: str
    source: str
    image: bytes | None = None
    image_path: str | None = None
    question: str = ""
    answer: str = ""
    category: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    invalid: str | None = None
    #: set by the engine: 0 for the first record with this id, n for its n-th repeat (rejected as duplicate_id)
    duplicate: int = 0
    #: with `source.group_by_image`: the other questions about this image merged into this record (each of
    #: them leaves the run as a `merged` reject naming this record's sample)
    siblings: list[SiblingQA] = Field(default_factory=list)


def content_key(*parts: bytes | str) -> str:
    """A short stable key from content, for records whose source has no id of its own."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


class Scores(BaseModel):
    instruction_following: float | None = None
    visual_quality: float | None = None
    coherence: float | None = None
    #: measured, not asked: how little changed outside the known edit region (1.0: nothing); consistency.py
    non_edit_consistency: float | None = None


if TYPE_CHECKING:

    class ModelNames(BaseModel):
        classifier: str | None
        rewriter: str | None
        editor: str | None
        judge: str | None

        def __getattr__(self, name: str) -> Any: ...

else:
    # one field per model stage of the table (stage_table.MODEL_ROLES), in its order: the built-in table gives
    # the four of every run so far (classifier, rewriter, editor, judge); a row of a run made before a stage
    # was added reads with that field None
    ModelNames = create_model(
        "ModelNames", __doc__="The model each stage called, by role (the rows' `models` column).",
        **{role: (str | None, None) for role in MODEL_ROLES.values()},
    )


class Sample(BaseModel):
    """One output row: an accepted sample or a reject, with everything needed to audit it."""

    id: str
    source: str
    shard: int
    task_category: str | None = None
    original_question: str = ""
    original_answer: str = ""
    process_answer: str | None = None
    edit_instruction: str | None = None
    source_image: bytes | None = None
    source_image_path: str | None = None
    edited_image: bytes | None = None
    scores: Scores = Field(default_factory=Scores)
    score: float | None = None
    analysis: str | None = None
    accepted: bool = False
    reject_reason: RejectReason | None = None
    reject_detail: str | None = None
    models: ModelNames = Field(default_factory=ModelNames)
    prompt_versions: dict[str, str] = Field(default_factory=dict)
    attempts: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    pipeline_hash: str = ""
    #: cost_usd plus replies this row used that another row paid for (a shared cached reply)
    attributed_cost_usd: float = 0.0
    edit_program: dict[str, Any] | None = None
    record_meta: dict[str, Any] = Field(default_factory=dict)
    #: the instruction plan drawn for this record (style, candidate, expected branch, both branch edits)
    instruction_plan: InstructionPlan | None = None
    #: question → answer → branch → edit, checked against the plan (reasoning.py); None when off
    reasoning: str | None = None
    #: the edit that should be visible afterwards (the expected branch's edit)
    intended_effect: str | None = None
    #: with a judge cascade: which judge decided and why (route cheap / band / audit), both judges' scores
    judge_cascade: dict[str, Any] | None = None
    #: multi-turn chains (`stages.chain`): the chain's id (its first turn's row id), this row's turn (1-based)
    #: and the previous turn's row id (None on turn 1); a single-turn run's rows are turn 1 of their own chain
    chain_id: str | None = None
    turn: int = 1
    parent_id: str | None = None
    #: what stages without a column of their own produced, by stage name (WorkItem.outputs); None when none did
    outputs: dict[str, Any] | None = None


IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
INSTRUCTION_PLAN_STRUCT = pa.struct(
    [
        ("style", pa.string()),
        ("candidate", pa.string()),
        ("candidate_is_answer", pa.bool_()),
        ("expected_branch", pa.string()),
        ("then_edit", pa.string()),
        ("else_edit", pa.string()),
        ("closing", pa.string()),
        ("operator", pa.string()),
        ("operands", pa.list_(pa.string())),
        ("questions", pa.list_(pa.string())),
        ("answers", pa.list_(pa.string())),
        ("depth", pa.int8()),
        ("join", pa.string()),
        (
            "conditions",
            pa.list_(
                pa.struct(
                    [
                        ("place", pa.string()),
                        ("question", pa.int8()),
                        ("operator", pa.string()),
                        ("operands", pa.list_(pa.string())),
                        ("holds", pa.bool_()),
                    ]
                )
            ),
        ),
        ("path", pa.list_(pa.string())),
        ("leaves", pa.list_(pa.struct([("path", pa.string()), ("edit", pa.string())]))),
        (
            "parameter",
            pa.struct(
                [("question", pa.int8()), ("formula", pa.string()), ("value", pa.int32()), ("path", pa.string())]
            ),
        ),
        ("answer_in_condition", pa.bool_()),
    ]
)

SAMPLE_SCHEMA_FIELDS: list[pa.Field] = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("source", pa.string()),
    pa.field("shard", pa.int32()),
    pa.field("task_category", pa.string()),
    pa.field("original_question", pa.string()),
    pa.field("original_answer", pa.string()),
    pa.field("process_answer", pa.string()),
    pa.field("edit_instruction", pa.string()),
    pa.field("source_image", IMAGE_STRUCT),
    pa.field("edited_image", IMAGE_STRUCT),
    pa.field(
        "scores",
        pa.struct(
            [
                ("instruction_following", pa.float32()),
                ("visual_quality", pa.float32()),
                ("coherence", pa.float32()),
                ("non_edit_consistency", pa.float32()),
            ]
        ),
    ),
    pa.field("score", pa.float32()),
    pa.field("analysis", pa.string()),
    pa.field("accepted", pa.bool_()),
    pa.field("reject_reason", pa.string()),
    pa.field("reject_detail", pa.string()),
    pa.field(
        "models",
        pa.struct(
            [(role, pa.string()) for role in MODEL_ROLES.values()]
        ),
    ),
    pa.field("prompt_versions", pa.string()),
    pa.field("attempts", pa.int16()),
    pa.field("cost_usd", pa.float64()),
    pa.field("latency_s", pa.float64()),
    pa.field("pipeline_hash", pa.string()),
    pa.field("edit_program", pa.string()),
    pa.field("record_meta", pa.string()),
    pa.field("instruction_plan", INSTRUCTION_PLAN_STRUCT),
    pa.field("attributed_cost_usd", pa.float64()),
    pa.field("reasoning", pa.string()),
    pa.field("intended_effect", pa.string()),
    pa.field("judge_cascade", pa.string()),
    pa.field("chain_id", pa.string()),
    pa.field("turn", pa.int16()),
    pa.field("parent_id", pa.string()),
    pa.field("outputs", pa.string()),
]

IMAGE_COLUMNS = ("source_image", "edited_image")
JSON_COLUMNS = ("prompt_versions", "edit_program", "record_meta", "judge_cascade", "outputs")


def hf_feature(arrow_type: pa.DataType, name: str = "", image_columns: tuple[str, ...] = IMAGE_COLUMNS) -> dict:
    """The HF `datasets` feature JSON for an Arrow type (images become `Image`)."""
    if name in image_columns:
        return {"_type": "Image"}
    if pa.types.is_struct(arrow_type):
        return {f.name: hf_feature(f.type) for f in arrow_type}
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return {"feature": hf_feature(arrow_type.value_type), "_type": "List"}
    dtype = {
        pa.string(): "string",
        pa.large_string(): "large_string",
        pa.binary(): "binary",
        pa.large_binary(): "large_binary",
        pa.bool_(): "bool",
        pa.int8(): "int8",
        pa.int16(): "int16",
        pa.int32(): "int32",
        pa.int64(): "int64",
        pa.float32(): "float32",
        pa.float64(): "float64",
    }[arrow_type]
    return {"dtype": dtype, "_type": "Value"}


def with_hf_metadata(schema: pa.Schema, image_columns: tuple[str, ...] = IMAGE_COLUMNS) -> pa.Schema:
    """Attach the `huggingface` schema metadata so `datasets` decodes image structs as PIL images."""
    features = {f.name: hf_feature(f.type, f.name, image_columns) for f in schema}
    meta = dict(schema.metadata or {})
    meta[b"huggingface"] = json.dumps({"info": {"features": features}}).encode()
    return schema.with_metadata(meta)


SAMPLE_SCHEMA = with_hf_metadata(pa.schema(SAMPLE_SCHEMA_FIELDS))


def sample_to_row(sample: Sample) -> dict[str, Any]:
    """A Sample as a plain dict matching SAMPLE_SCHEMA (images as {bytes, path} structs, JSON as text)."""
    row = sample.model_dump(exclude={"source_image", "source_image_path", "edited_image"})
    row["source_image"] = (
        {"bytes": sample.source_image, "path": sample.source_image_path or f"{sample.id}.png"}
        if sample.source_image is not None
        else None
    )
    row["edited_image"] = (
        {"bytes": sample.edited_image, "path": f"{sample.id}.edited.png"}
        if sample.edited_image is not None
        else None
    )
    row["reject_reason"] = sample.reject_reason.value if sample.reject_reason else None
    row["chain_id"] = sample.chain_id or sample.id
    for col in JSON_COLUMNS:
        value = row[col]
        row[col] = None if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return row


def samples_to_table(samples: list[Sample]) -> pa.Table:
    """Build one Arrow table (SAMPLE_SCHEMA) from samples, sorted by id so shard content is order-independent."""
    rows = [sample_to_row(s) for s in sorted(samples, key=lambda s: s.id)]
    return pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)


def row_to_sample(row: dict[str, Any]) -> Sample:
    """Inverse of sample_to_row for rows read back from parquet (with undecoded image structs)."""
    data = dict(row)
    for col in JSON_COLUMNS:
        if data.get(col) is not None:
            data[col] = json.loads(data[col])
    if data.get("prompt_versions") is None:
        data["prompt_versions"] = {}
    if data.get("record_meta") is None:
        data["record_meta"] = {}
    src = data.pop("source_image", None) or {}
    edited = data.pop("edited_image", None) or {}
    data["source_image"] = src.get("bytes")
    data["source_image_path"] = src.get("path")
    data["edited_image"] = edited.get("bytes")
    for key in ("scores", "models", "instruction_plan", "turn"):
        if data.get(key) is None:
            data.pop(key, None)
    return Sample.model_validate(data)
