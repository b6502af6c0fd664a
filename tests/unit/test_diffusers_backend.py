"""The diffusers backend's checks and request mapping, without Ray and without weights (model_index.json only)."""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from uniedit_synth.backends.base import EditRequest
from uniedit_synth.backends.diffusers_backend import (
    DiffusersEditor,
    pool_name,
    request_seed,
    resolve_pipeline_class,
    target_size,
)
from uniedit_synth.backends.registry import create_backend
from uniedit_synth.core.config import BackendSpec, load_pipeline
from uniedit_synth.core.errors import BackendConfigError


def model_dir(tmp_path: Path, class_name: str) -> Path:
    folder = tmp_path / class_name
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": class_name, "_diffusers_version": "0.42.1"}))
    return folder


def png(size=(40, 30), colour=(10, 20, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def editor(**options) -> DiffusersEditor:
    return create_backend("editor", BackendSpec(type="diffusers", model="/nowhere", options=options), "edit")


def test_unknown_or_wrong_options_are_one_line_errors():
    with pytest.raises(BackendConfigError, match="unknown option") as err:
        editor(stepz=3)
    assert "\n" not in str(err.value)
    with pytest.raises(BackendConfigError, match="dtype"):
        editor(dtype="float8")


def test_the_backend_is_not_rate_limited_and_served_by_replicas():
    backend = editor()
    assert backend.rate_limited is False and backend.provider == "local"
    assert backend.replica_runner.endswith(":DiffusersRunner")


def test_the_seed_comes_from_the_request_key():
    base = EditRequest(model="m", instruction="paint the cube red", image=png())
    assert request_seed(base) == request_seed(base.model_copy())
    assert request_seed(base) != request_seed(base.model_copy(update={"attempt": 1}))
    assert request_seed(base) != request_seed(base.model_copy(update={"image": png(colour=(1, 2, 3))}))
    # context is not part of a diffusers request (the model never sees it)
    assert request_seed(base) == request_seed(base.model_copy(update={"context": {"x": 1}}))
    assert 0 <= request_seed(base) < 2**63


def test_payload_params_and_batch_key():
    backend = editor(steps=7, size=32, guidance_scale=2.0)
    request = EditRequest(model="m", instruction="x", image=png((40, 30)), params={"steps": 3, "temperature": 1})
    payload = backend.payload(request)
    assert payload["params"]["steps"] == 3  # a stage param overrides the option; unknown params are not sent
    assert "temperature" not in payload["params"]
    assert (payload["params"]["width"], payload["params"]["height"]) == (32, 32)  # 40x30 → long side 32
    other = backend.payload(request.model_copy(update={"instruction": "y", "image": png((80, 60))}))
    assert other["batch_key"] == payload["batch_key"]  # same params and size: may share a batch
    taller = backend.payload(request.model_copy(update={"image": png((30, 60))}))
    assert taller["batch_key"] != payload["batch_key"]


def test_target_size_rounds_to_16():
    assert target_size(640, 480, 512) == (512, 384)
    assert target_size(100, 7, 64) == (64, 16)
    assert target_size(33, 17, None) == (33, 17)


def test_pool_name_is_the_same_for_the_same_spec():
    spec = BackendSpec(type="diffusers", model="m", options={"steps": 2})
    again = BackendSpec.model_validate_json(spec.model_dump_json())
    assert pool_name(spec, "t1") == pool_name(again, "t1") != pool_name(spec, "t2")


def test_a_directory_without_model_index_is_refused(tmp_path):
    with pytest.raises(BackendConfigError, match="no model_index.json"):
        resolve_pipeline_class(str(tmp_path))
    with pytest.raises(BackendConfigError, match="no such directory"):
        resolve_pipeline_class(str(tmp_path / "missing"))


needs_diffusers = pytest.mark.skipif(importlib.util.find_spec("diffusers") is None,
                                     reason="needs the diffusers extra")


@needs_diffusers
def test_auto_takes_an_editing_class_as_it_is(tmp_path):
    cls = resolve_pipeline_class(str(model_dir(tmp_path, "StableDiffusionInstructPix2PixPipeline")))
    assert cls.__name__ == "StableDiffusionInstructPix2PixPipeline"


@needs_diffusers
def test_auto_maps_a_text_to_image_class_to_its_image_to_image_counterpart(tmp_path):
    cls = resolve_pipeline_class(str(model_dir(tmp_path, "StableDiffusionPipeline")))
    assert cls.__name__ == "StableDiffusionImg2ImgPipeline"


@needs_diffusers
def test_a_text_to_image_only_pipeline_is_refused(tmp_path):
    folder = str(model_dir(tmp_path, "StableDiffusionInstructPix2PixPipeline"))
    with pytest.raises(BackendConfigError, match="StableDiffusionPipeline' cannot edit"):
        resolve_pipeline_class(folder, "StableDiffusionPipeline")
    with pytest.raises(BackendConfigError, match="unknown pipeline class"):
        resolve_pipeline_class(folder, "NoSuchPipeline")
    # auto, with a text-to-image class diffusers has no image-to-image counterpart for
    with pytest.raises(BackendConfigError, match="cannot edit"):
        resolve_pipeline_class(str(model_dir(tmp_path, "DiTPipeline")))


@needs_diffusers
def test_preflight_refuses_the_inline_engine(tmp_path):
    backend = create_backend("editor", BackendSpec(
        type="diffusers", model=str(model_dir(tmp_path, "StableDiffusionInstructPix2PixPipeline"))), "edit")
    backend.preflight("ray")
    with pytest.raises(BackendConfigError, match="--engine ray"):
        backend.preflight("inline")


def test_replicas_resources_stay_off_the_shard_workers():
    from uniedit_synth.engine.runtime import worker_resources

    config = load_pipeline("open-weights")
    assert config.backends["editor"].resources.num_gpus == 1
    assert worker_resources(config).actor_options() == {"num_cpus": 0}


def test_serving_knobs_are_not_part_of_the_pipeline_hash():
    a = load_pipeline("open-weights")
    b = load_pipeline("open-weights", {"backends": {"editor": {"serve": {"replicas": 8, "max_batch": 1},
                                                               "resources": {"num_gpus": 0.5}}}})
    assert a.hashed_view() == b.hashed_view()
    c = load_pipeline("open-weights", {"backends": {"editor": {"options": {"steps": 4}}}})
    assert a.hashed_view() != c.hashed_view()
