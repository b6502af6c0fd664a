"""The stage table and what derives from it: model roles, the `models` column, a model stage's default spec, the
validate stage; the Backend base class whose defaults the engine relies on (a plugin's own members win)."""

from __future__ import annotations

import asyncio
import io

import pyarrow as pa
import pytest
from PIL import Image

from uniedit_synth.backends.base import Backend, BadRequest, TextReply, TextRequest
from uniedit_synth.backends.plugin_guard import PluginGuard
from uniedit_synth.backends.registry import create_backend
from uniedit_synth.core.config import CONFIGURED_STAGES, BackendSpec, Stages, load_pipeline
from uniedit_synth.core.records import (
    SAMPLE_SCHEMA,
    ModelNames,
    RejectReason,
    Sample,
    VQARecord,
    row_to_sample,
)
from uniedit_synth.core.specs import StageBase
from uniedit_synth.core.stage_table import CAPABILITY, MODEL_ROLES, STAGE_TABLE, StageDef, stage_def
from uniedit_synth.offline.builtin import BuiltinText
from uniedit_synth.stages.base import Rejected, StageContext, WorkItem
from uniedit_synth.stages.validate import ValidateStage


def test_roles_and_the_models_column_derive_from_the_table():
    assert MODEL_ROLES == {"classify": "classifier", "rewrite": "rewriter", "edit": "editor", "judge": "judge"}
    assert CAPABILITY == {"classify": "text", "rewrite": "text", "edit": "edit", "judge": "text"}
    assert list(ModelNames.model_fields) == list(MODEL_ROLES.values())
    assert [f.name for f in SAMPLE_SCHEMA.field("models").type] == ["classifier", "rewriter", "editor", "judge"]
    # the `stages:` YAML model: one entry per configured stage (beside `chain`, which is no stage), validate
    # (no entry) left out
    assert [d.name for d in CONFIGURED_STAGES] == ["classify", "rewrite", "edit", "judge"]
    assert [name for name in Stages.model_fields if name != "chain"] == [d.name for d in CONFIGURED_STAGES]
    assert stage_def("validate").before_screen and stage_def("validate").spec is None
    assert STAGE_TABLE[0].name == "validate"


def test_a_model_stage_without_a_spec_gets_a_backend_and_its_prompt():
    definition = StageDef("caption", "text", "pkg.mod:CaptionStage", RejectReason.stage_failed, role="captioner")
    assert issubclass(definition.spec, StageBase)
    options = definition.spec(backend="text")
    assert options.prompt == "caption.txt" and options.mode == "online"
    with pytest.raises(ValueError):
        definition.spec()  # a model stage names its backend
    no_model = StageDef("noop", None, "pkg.mod:NoopStage", RejectReason.invalid_input)
    assert not issubclass(no_model.spec, StageBase)


def test_rows_of_a_run_with_fewer_roles_read():
    """An old run's `models` struct without a role (written before that stage existed) reads with it None."""
    row = Sample(id="a", source="s", shard=0).model_dump()
    old_struct = pa.struct([("classifier", pa.string()), ("rewriter", pa.string()), ("editor", pa.string())])
    table = pa.table({"id": ["a"], "source": ["s"], "shard": pa.array([0], pa.int32()),
                      "models": pa.array([{"classifier": "c", "rewriter": "r", "editor": "e"}], old_struct)})
    read = row_to_sample({**{k: v for k, v in row.items() if k in ("accepted",)}, **table.to_pylist()[0]})
    assert read.models.classifier == "c" and read.models.judge is None and read.outputs is None


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def _validate(record: VQARecord, **source) -> WorkItem:
    config = load_pipeline("default")
    if source:
        config = config.model_copy(update={"source": config.source.model_copy(update=source)})
    stage = ValidateStage(StageContext(config=config, callers={}, models={}))
    return asyncio.run(stage(WorkItem(record=record, shard=0)))


def test_the_validate_stage_rejects_bad_input_and_cleans_good_input():
    good = VQARecord(id="a", source="s", image=_png(), question="What colour?", answer="red")
    item = _validate(good)
    assert item.image and Image.open(io.BytesIO(item.image)).size == (8, 6) and item.fingerprint is None
    with pytest.raises(Rejected) as dup:
        _validate(good.model_copy(update={"duplicate": 1}))
    assert dup.value.reason is RejectReason.duplicate_id
    with pytest.raises(Rejected) as bad:
        _validate(good.model_copy(update={"image": b"not an image"}))
    assert bad.value.reason is RejectReason.invalid_input


def test_the_validate_stage_keeps_the_fingerprint_for_the_screen():
    from uniedit_synth.core.config import DedupSpec
    from uniedit_synth.method.fingerprint import fingerprint_image

    item = _validate(VQARecord(id="a", source="s", image=_png(), question="q", answer="a"), dedup=DedupSpec())
    assert item.fingerprint == fingerprint_image(item.image).to_hex()


class PlainPlugin:
    """A plugin with only the protocol's members."""

    provider = "plain"

    def __init__(self, spec, seed=0):
        pass

    async def complete(self, request):
        return TextReply(data={})

    async def aclose(self):
        pass


class RichPlugin(PlainPlugin):
    provider = "rich"
    reads_context = True
    rate_limited = False

    def __init__(self, spec, seed=0):
        self.spec = spec
        self.checked = []

    def batch_route(self, capability):
        return f"route:{capability}"

    def preflight(self, engine_kind):
        self.checked.append(engine_kind)


def test_a_plugin_gets_the_base_class_defaults_and_keeps_its_own_members():
    plain = create_backend("p", BackendSpec(type=f"{__name__}:PlainPlugin", model="m"), "text")
    assert isinstance(plain, PluginGuard) and isinstance(plain, Backend)
    assert (plain.reads_context, plain.rate_limited, plain.spec, plain.replica_runner) == (False, True, None, None)
    assert plain.batch_route("text") is None and plain.preflight("ray") is None and plain.provider == "plain"
    asyncio.run(plain.start())  # no start(): nothing to do
    rich = create_backend("r", BackendSpec(type=f"{__name__}:RichPlugin", model="m"), "text")
    assert (rich.reads_context, rich.rate_limited, rich.spec.model) == (True, False, "m")
    assert rich.batch_route("edit") == "route:edit"
    rich.preflight("inline")
    assert rich.wrapped.checked == ["inline"]


def test_the_builtin_text_backend_answers_a_new_stage_by_its_schema():
    backend = BuiltinText(BackendSpec(type="builtin", model="builtin-text"))
    schema = {"type": "object", "properties": {"caption": {"type": "string"}, "n": {"type": "integer"},
                                               "tone": {"enum": ["dry", "warm"]}}}
    reply = asyncio.run(backend.complete(TextRequest(task="caption", model="m", prompt="p", response_schema=schema)))
    assert reply.data == {"caption": "builtin caption: caption", "n": 0, "tone": "dry"}
    with pytest.raises(BadRequest, match="no task 'caption'"):
        asyncio.run(backend.complete(TextRequest(task="caption", model="m", prompt="p")))
