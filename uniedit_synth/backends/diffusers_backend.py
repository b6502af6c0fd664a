"""The `diffusers` edit backend: an open-weights editor (a diffusers pipeline) served by Ray replicas.

Two halves:
- `DiffusersEditor` is what shard workers hold: it checks the options, turns an EditRequest into a payload
  (prompt, source image, a seed derived from the request key, generation parameters) and sends it to the
  backend's replica pool (engine/replicas.py), which batches requests for the model replicas. It loads
  nothing: shard workers stay on CPU nodes and the driver never holds weights.
- `DiffusersRunner` lives inside each replica (a Ray actor that asked for `resources`, e.g. a GPU): it loads
  the pipeline with `from_pretrained` and runs a batch of payloads in one pipeline call, one torch generator
  per request.

The seed of a request is taken from its cache key, so the reply cached for a request is the image the same
request produces when it is sent again (up to floating-point reduction order, which can differ with the batch a
request shares on a GPU in half precision: see README "Open-weights editors").
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import io
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core.config import BackendSpec, ServeSpec
from ..core.errors import BackendConfigError
from .base import Backend, BadRequest, EditReply, EditRequest, Unreachable, Usage, request_key
from .geometry import DIFFUSERS_MULTIPLE, rounded_size

log = logging.getLogger(__name__)

#: env var naming this run's replica pools (set by engine/runtime.py, forwarded to every shard worker)
RUN_TOKEN_ENV = "UNIEDIT_REPLICA_RUN"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class DiffusersOptions(BaseModel):
    """`options:` of a `type: diffusers` backend. `steps`, the guidance scales, `negative_prompt` and `size` can
    also be set per stage in `stages.edit.params` (they are part of each request)."""

    model_config = ConfigDict(extra="forbid")

    #: `auto`: the class in the model's model_index.json if it takes an input image, else its image-to-image
    #: counterpart from diffusers' AutoPipelineForImage2Image table; or a class name (`FluxKontextPipeline`)
    pipeline: str = "auto"
    #: `auto`: float16 on a GPU, float32 on CPU
    dtype: Literal["auto", "float32", "float16", "bfloat16", "float64"] = "auto"
    steps: int = Field(default=20, ge=1, le=1000)
    guidance_scale: float | None = None
    image_guidance_scale: float | None = None
    true_cfg_scale: float | None = None
    negative_prompt: str | None = None
    #: the long side the source image is resized to (both sides rounded to a multiple of 16); None: as is
    size: int | None = Field(default=None, ge=16, le=4096)
    #: further keyword arguments of the pipeline call (e.g. `max_sequence_length`)
    call_kwargs: dict[str, Any] = Field(default_factory=dict)
    #: torch CPU threads per replica (None: the replica's num_cpus, at least 1)
    cpu_threads: int | None = Field(default=None, ge=1, le=1024)


GENERATION_PARAMS = ("steps", "guidance_scale", "image_guidance_scale", "true_cfg_scale", "negative_prompt", "size")


def parse_options(spec: BackendSpec) -> DiffusersOptions:
    try:
        return DiffusersOptions.model_validate(spec.options)
    except ValidationError as exc:
        parts = []
        for item in exc.errors():
            where = ".".join(str(p) for p in item["loc"])
            parts.append(f"{where}: {'unknown option' if item['type'] == 'extra_forbidden' else item['msg']}")
        raise BackendConfigError(f"backend diffusers ({spec.model}): invalid options: {'; '.join(parts)}") from None


# -- where the model is and which class edits with it ----------------------------------------------------------
def model_index(model: str) -> dict[str, Any]:
    """The model's model_index.json: from a local pipeline directory, or (hub id) from the Hugging Face cache,
    downloading that one small file where the hub is reachable (never weights: those load in the replicas)."""
    path = Path(model).expanduser()
    if path.exists() or model.startswith((".", "/", "~")) or not _HUB_ID.match(model):
        if not path.is_dir():
            raise BackendConfigError(f"diffusers model '{model}': no such directory (nor a hub id like org/name)")
        index = path / "model_index.json"
        if not index.is_file():
            raise BackendConfigError(
                f"diffusers model '{model}': the directory has no model_index.json, so it is not a diffusers "
                "pipeline (save one with pipeline.save_pretrained(dir), or name a hub id)"
            )
        text = index.read_text(encoding="utf-8")
    else:
        try:
            from huggingface_hub import hf_hub_download

            text = Path(hf_hub_download(model, "model_index.json")).read_text(encoding="utf-8")
        except Exception as exc:  # noqa: BLE001 - offline, gated, unknown repo: all the same to the user
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BackendConfigError(
                f"diffusers model '{model}': cannot read its model_index.json from the hub or the local cache "
                f"({first[:200]}); download it first (huggingface-cli download {model}) or use a local directory"
            ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BackendConfigError(f"diffusers model '{model}': model_index.json is not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("_class_name"), str):
        raise BackendConfigError(f"diffusers model '{model}': model_index.json names no pipeline class")
    return data


def can_edit(cls: type) -> bool:
    """A pipeline edits when its call takes a source `image` (text-to-image pipelines do not)."""
    try:
        return "image" in inspect.signature(cls.__call__).parameters
    except (TypeError, ValueError):
        return False


def resolve_pipeline_class(model: str, pipeline: str = "auto") -> type:
    """The diffusers class that loads `model` and edits with it, or a one-line BackendConfigError."""
    try:
        import transformers

        transformers.logging.set_verbosity_error()  # its import-time notes (no torchvision ...) are noise here
        import diffusers
    except ImportError:
        raise BackendConfigError(
            "backend type diffusers needs the diffusers extra: pip install 'uniedit-synth[diffusers]'"
        ) from None
    index = model_index(model)
    if pipeline != "auto":
        cls = getattr(diffusers, pipeline, None)
        if not isinstance(cls, type) or not hasattr(cls, "from_pretrained"):
            raise BackendConfigError(f"diffusers model '{model}': unknown pipeline class '{pipeline}'")
        if not can_edit(cls):
            raise BackendConfigError(
                f"diffusers pipeline '{pipeline}' cannot edit: it is text-to-image only (its call takes no "
                "source image); name an editing or image-to-image pipeline, or use pipeline: auto"
            )
        return cls
    name = index["_class_name"]
    cls = getattr(diffusers, name, None)
    if isinstance(cls, type) and can_edit(cls):
        return cls
    from diffusers.pipelines.auto_pipeline import AUTO_IMAGE2IMAGE_PIPELINES_MAPPING, _get_task_class

    counterpart = _get_task_class(AUTO_IMAGE2IMAGE_PIPELINES_MAPPING, name, throw_error_if_not_exist=False)
    if counterpart is None or not can_edit(counterpart):
        raise BackendConfigError(
            f"diffusers model '{model}': its pipeline {name} cannot edit (text-to-image only) and diffusers "
            "knows no image-to-image counterpart for it; use an editing model (InstructPix2Pix, FLUX.1 "
            "Kontext, Qwen-Image-Edit) or set options.pipeline"
        )
    return counterpart


# -- the client half (shard workers) -----------------------------------------------------------------------
def request_seed(request: EditRequest) -> int:
    """The request's seed: from its cache key (engine/calls.py uses the same key), so a cached reply and a
    regenerated one come from the same noise."""
    return int(request_key("edit", request, with_context=False)[:15], 16)


def target_size(width: int, height: int, size: int | None, keep_geometry: bool = False) -> tuple[int, int]:
    """The size the editor works at: the long side `size` (or the source's own), both sides rounded to the
    model's multiple; without either, the source's size as is."""
    if size is None and not keep_geometry:
        return width, height
    return rounded_size((width, height), DIFFUSERS_MULTIPLE, size)


def pool_name(spec: BackendSpec, run_token: str) -> str:
    """The Ray actor name of this backend's replica pool in one run (the spec is the same JSON everywhere)."""
    digest = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:12]
    return f"uniedit-replicas-{run_token}-{digest}"


class DiffusersEditor(Backend):
    """EditBackend for `type: diffusers` (see the module docstring). `replica_runner` tells the Ray runtime to
    serve this backend from replicas; `rate_limited = False`: capacity is the replicas', not a quota."""

    provider = "local"
    rate_limited = False
    replica_runner = "uniedit_synth.backends.diffusers_backend:DiffusersRunner"

    def __init__(self, spec: BackendSpec, seed: int = 0) -> None:
        self.spec = spec
        self.model = spec.model
        self.seed = seed
        self.options = parse_options(spec)
        self.serve = spec.serve or ServeSpec()
        self._pool: Any = None

    def preflight(self, engine_kind: str) -> None:
        """In the driver, before any worker or paid call: the model is a pipeline that can edit."""
        if engine_kind != "ray":
            raise BackendConfigError(
                f"backend diffusers ({self.model}) is served by Ray replicas: use --engine ray (in-process Ray "
                "starts by itself), not --engine inline"
            )
        resolve_pipeline_class(self.model, self.options.pipeline)

    async def start(self) -> None:
        import ray

        token = os.environ.get(RUN_TOKEN_ENV, "")
        try:
            self._pool = ray.get_actor(pool_name(self.spec, token))
        except ValueError:
            raise BackendConfigError(
                f"backend diffusers ({self.model}): no replica pool in this Ray job (is the run on --engine ray?)"
            ) from None

    def payload(self, request: EditRequest) -> dict[str, Any]:
        from PIL import Image

        params = {k: getattr(self.options, k) for k in GENERATION_PARAMS}
        params.update({k: v for k, v in request.params.items() if k in GENERATION_PARAMS})
        try:
            with Image.open(io.BytesIO(request.image)) as img:
                width, height = img.size
        except Exception as exc:  # noqa: BLE001 - validated upstream; a broken image is this record's problem
            raise BadRequest(f"source image unreadable: {exc}") from None
        size = target_size(width, height, params.pop("size"), keep_geometry=request.source_size is not None)
        params["width"], params["height"] = size
        return {
            "prompt": request.instruction,
            "image": request.image,
            "seed": request_seed(request),
            "params": params,
            # requests share a batch only with equal parameters and image size
            "batch_key": json.dumps(params, sort_keys=True),
        }

    async def edit(self, request: EditRequest) -> EditReply:
        import ray

        if self._pool is None:
            await self.start()
        try:
            png = await self._pool.edit.remote(self.payload(request))
        except ray.exceptions.RayActorError as exc:
            raise Unreachable(f"the replica pool of {self.model} is gone ({type(exc).__name__})") from None
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise
        return EditReply(image=png, model=self.model, usage=Usage(images_in=1, images_out=1))

    async def aclose(self) -> None:
        self._pool = None


# -- the replica half ------------------------------------------------------------------------------------------
def quiet_libraries() -> None:
    """Replicas log through Ray to the driver's terminal: no loading bars, no per-prompt truncation notes."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


class DiffusersRunner:
    """Loads the pipeline in a replica and runs batches of payloads (engine/replicas.py ModelReplica)."""

    def __init__(self, spec_json: str, device: str, num_cpus: float = 1.0):
        import torch

        spec = BackendSpec.model_validate_json(spec_json)
        self.options = parse_options(spec)
        threads = self.options.cpu_threads or max(1, int(num_cpus))
        torch.set_num_threads(threads)
        cls = resolve_pipeline_class(spec.model, self.options.pipeline)
        dtype_name = self.options.dtype
        if dtype_name == "auto":
            dtype_name = "float16" if device.startswith("cuda") else "float32"
        self.device = device
        self.dtype = getattr(torch, dtype_name)
        quiet_libraries()
        # diffusers >= 0.36 names it `dtype` (torch_dtype is deprecated there); older releases take torch_dtype
        dtype_arg = "dtype" if "_resolve_dtype" in vars(importlib.import_module("diffusers.pipelines.pipeline_utils")) \
            else "torch_dtype"
        pipe = cls.from_pretrained(spec.model, **{dtype_arg: self.dtype})
        self.pipe = pipe.to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.accepts = set(inspect.signature(cls.__call__).parameters)
        self.pipeline_class = cls.__name__

    def run_batch(self, payloads: list[dict[str, Any]]) -> list[bytes]:
        """One pipeline call for the batch (equal params and size: the pool grouped them by batch_key)."""
        import torch
        from PIL import Image

        params = payloads[0]["params"]
        size = (params["width"], params["height"])
        images = []
        for p in payloads:
            with Image.open(io.BytesIO(p["image"])) as img:
                rgb = img.convert("RGB")
            images.append(rgb if rgb.size == size else rgb.resize(size, Image.Resampling.LANCZOS))
        # CPU generators: the same seed gives the same noise on any device
        generators = [torch.Generator(device="cpu").manual_seed(int(p["seed"])) for p in payloads]
        kwargs: dict[str, Any] = {
            "prompt": [p["prompt"] for p in payloads],
            "image": images,
            "generator": generators,
            "num_inference_steps": params["steps"],
            "output_type": "pil",
        }
        for name in ("guidance_scale", "image_guidance_scale", "true_cfg_scale"):
            if params.get(name) is not None and name in self.accepts:
                kwargs[name] = params[name]
        if params.get("negative_prompt") is not None and "negative_prompt" in self.accepts:
            kwargs["negative_prompt"] = [params["negative_prompt"]] * len(payloads)
        for name, value in (("width", size[0]), ("height", size[1])):
            if name in self.accepts:
                kwargs[name] = value
        kwargs.update(self.options.call_kwargs)
        with torch.inference_mode():
            out = self.pipe(**kwargs)
        replies = []
        for image in out.images:
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            replies.append(buf.getvalue())
        return replies
