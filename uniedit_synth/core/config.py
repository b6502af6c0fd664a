"""The pipeline config: pydantic models for the YAML, loading with clear errors, and the pipeline hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from . import bundled
from .errors import ConfigError
from .specs import (
    ActorResources,
    ChainSpec,
    ClassifySpec,
    EditSpec,
    JudgeSpec,
    RewriteSpec,
    Strict,
)
from .stage_table import (  # noqa: F401 - re-exported: the table is part of the config's contract
    ATTEMPT_STAGES,
    CAPABILITY,
    CONFIGURED_STAGES,
    EXIT_STAGE,
    MODEL_ROLES,
    MODEL_STAGES,
    STAGE_NAMES,
    STAGE_TABLE,
    StageDef,
    stage_def,
)
from .values import check_backend_type, config_problem
from .yaml_bounds import MAX_YAML_NODES, load_yaml_text, read_yaml_file  # noqa: F401 - load_yaml_text: the CLI's

#: the built-in pipelines and prompts (bundled.py: inside the installed package, or the checkout's top level)
PIPELINES_DIR = bundled.pipelines_dir()
PROMPTS_DIR = bundled.prompts_dir()


class ServeSpec(Strict):
    """How a local-model backend (`type: diffusers`) is served: `replicas` Ray actors, each asking Ray for the
    backend's `resources` (e.g. `num_gpus: 1`, or 0.5 to pack two small models on a GPU), fed batches of up to
    `max_batch` requests, a batch waiting at most `batch_wait_ms` for more once its first request arrived.
    None of it changes what a request produces (each request has its own seed), so it is not hashed."""

    replicas: int = Field(default=1, ge=1, le=1024)
    #: chosen from benchmarks/diffusers_batching.py (images/s at batch 1, 2, 4, 8)
    max_batch: int = Field(default=4, ge=1, le=256)
    batch_wait_ms: float = Field(default=20.0, ge=0, le=60_000)
    #: replacements of a dead replica in a row (without a finished batch between) before the run stops
    max_restarts: int = Field(default=3, ge=0, le=100)


class BackendSpec(Strict):
    """One named model endpoint. `type` picks the implementation: a registry name (`openai`, `gemini`,
    `openai-compatible`, `builtin`, `diffusers`) or a plugin class `package.module:ClassName`
    (backends/registry.py). `resources`: what a worker running this backend asks Ray for (a local model's GPU);
    for a backend served by replicas (`diffusers`), what each replica asks for, with `serve` saying how many
    replicas and how they batch (shard workers then stay on CPU)."""

    type: Annotated[str, AfterValidator(check_backend_type)]
    model: str
    base_url: str | None = None
    api_key_env: str | None = None
    timeout_s: float = 120.0
    structured_outputs: bool = True
    options: dict[str, Any] = Field(default_factory=dict)
    resources: ActorResources | None = None
    serve: ServeSpec | None = None


class InputPolicy(Strict):
    """What a record must satisfy before any model sees it (bad input becomes `invalid_input`)."""

    max_side: int = Field(default=1024, ge=1)
    max_pixels: int = Field(default=64_000_000, ge=1)
    max_text_chars: int = Field(default=4000, ge=1)
    truncate_long_text: bool = False
    allow_remote_images: bool = False
    remote_timeout_s: float = Field(default=20.0, gt=0)
    remote_max_bytes: int = Field(default=20_000_000, ge=1)


class DedupSpec(Strict):
    """`source.dedup`: reject later copies of an input before any model call (`duplicate_input`).

    `by: image` rejects a record whose image is a near-copy of an earlier record's; `by: pair` only when the
    normalised question is the same too. Near-copy: 64-bit pHash within `max_distance` bits, then verified
    (audit/fingerprint.py)."""

    by: Literal["image", "pair"] = "pair"
    max_distance: int = Field(default=4, ge=0, le=16)


class GroupSpec(Strict):
    """`source.group_by_image`: records of one shard that share an image become samples of 1 to
    `max_questions` questions (sources/grouping.py): a primary record carries the others as `siblings`, and
    each other record leaves the run as a `merged` reject whose detail names the primary's sample.

    `by`: `id` (the `key` column of the row, e.g. CLEVR's `image_index`), `path` (the image's path or URL),
    `content` (sha256 of the image bytes), `auto` (the first of these the record has). On the offline world
    (`scenes`), `scenes_questions_per_image` questions are asked about each scene (CLEVR asks ~10 a picture) unless
    `source.options.questions_per_image` says; other sources ignore it."""

    by: Literal["auto", "id", "path", "content"] = "auto"
    key: str = "image_id"
    max_questions: int = Field(default=3, ge=1, le=3)
    scenes_questions_per_image: int = Field(default=1, ge=1, le=5)


class SourceSpec(Strict):
    """Where VQA records come from. `spec` is `scenes`, `hf:<name>[:config][@split]`, or a path."""

    spec: str = "scenes"
    #: the Source class that opens `spec`: a registered name or a plugin `package.module:Class`; None = the
    #: first registered class that opens it (sources/registry.py)
    type: str | None = None
    preset: str | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    image_root: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    shuffle: bool = False
    subject_key: str | None = None
    subject_caps: dict[str, int] = Field(default_factory=dict)
    #: `image`, `pair` or a DedupSpec mapping; None = keep every copy
    dedup: DedupSpec | None = None
    #: benchmark specs (audit/benchmarks.py) whose images or texts a record must not match (`contaminated`)
    decontaminate: list[str] = Field(default_factory=list)
    #: `true`, `id`/`path`/`content` or a GroupSpec mapping; None (the release's way) = one question a sample
    group_by_image: GroupSpec | None = None

    @field_validator("dedup", "group_by_image", mode="before")
    @classmethod
    def _by_shorthand(cls, value: Any) -> Any:
        """Shorthands for the mapping: `true` (its defaults), `false` (off) or a string (its `by`)."""
        if isinstance(value, str):
            return {"by": value}
        if value is True:
            return {}
        if value is False:
            return None
        return value


def _stage_field(definition: StageDef) -> tuple[Any, Any]:
    try:
        definition.spec()  # type: ignore[misc]
    except ValidationError:
        return (definition.spec, ...)  # required (a model stage needs its backend)
    return (definition.spec, Field(default_factory=definition.spec))


if TYPE_CHECKING:

    class Stages(Strict):
        classify: ClassifySpec
        rewrite: RewriteSpec
        edit: EditSpec
        judge: JudgeSpec
        chain: ChainSpec

        def __getattr__(self, name: str) -> Any: ...

else:
    Stages = create_model(
        "Stages", __base__=Strict, __doc__="`stages:` of the YAML, one entry per configured stage (STAGE_TABLE).",
        **{d.name: _stage_field(d) for d in CONFIGURED_STAGES},
        # not a stage: how many times a record goes through the stages (engine/chains.py)
        chain=(ChainSpec, Field(default_factory=ChainSpec)),
    )


class EngineSpec(Strict):
    kind: Literal["ray", "inline"] = "ray"
    workers: int = Field(default=2, ge=1, le=1024)
    #: 250: a finished shard is 4 files (data, rejects, attempts, cache pack), so 16 files per 1,000 records
    #: (docs/guides/scale.md); a redone shard replays its calls from the cache, so a big one costs little to redo
    shard_size: int = Field(default=250, ge=1, le=1_000_000)
    #: None = enough for every stage to keep its `concurrency` calls busy (engine/driver.py shards_per_worker)
    shards_in_flight_per_worker: int | None = Field(default=None, ge=1, le=1024)
    ray_address: str | None = None
    #: workers spend leases of rate-limit slots locally (DESIGN §4); false: one coordinator RPC per call
    leases: bool = True
    #: what every shard worker asks Ray for (merged with the resources of the backends the stages use)
    worker_resources: ActorResources = Field(default_factory=ActorResources)


class RateLimit(Strict):
    rpm: float | None = Field(default=None, gt=0)
    tpm: float | None = Field(default=None, gt=0)


class Limits(Strict):
    max_cost_usd: float | None = None
    rate_limits: dict[str, RateLimit] = Field(default_factory=dict)

    @field_validator("max_cost_usd")
    @classmethod
    def _positive_budget(cls, value: float | None) -> float | None:  # 0 would reject every record, even free ones
        if value is not None and not value > 0:
            raise ValueError(f"{value:g} USD is no budget; give more than 0 (--max-cost 5), or leave it out for none")
        return value


class RetrySpec(Strict):
    max_attempts: int = Field(default=6, ge=1, le=50)
    initial_s: float = Field(default=1.0, ge=0)
    max_s: float = Field(default=60.0, ge=0)
    jitter_s: float = Field(default=1.0, ge=0)


class Price(Strict):
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    per_image_in: float = 0.0
    per_image_out: float = 0.0
    #: share of the online price a provider batch job costs (OpenAI Batch and Gemini Batch Mode: 50 %)
    batch_factor: float = Field(default=0.5, ge=0)


class PipelineConfig(Strict):
    """A whole pipeline: source, backends, the stages (STAGE_TABLE), engine, limits, prices."""

    name: str = "pipeline"
    seed: int = 0
    limit: int | None = Field(default=None, ge=0)
    source: SourceSpec = Field(default_factory=SourceSpec)
    input: InputPolicy = Field(default_factory=InputPolicy)
    backends: dict[str, BackendSpec]
    stages: Stages
    engine: EngineSpec = Field(default_factory=EngineSpec)
    limits: Limits = Field(default_factory=Limits)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    prices: dict[str, Price] = Field(default_factory=dict)
    prompts_dir: str | None = None

    @model_validator(mode="after")
    def _stage_backends_exist(self) -> PipelineConfig:
        for definition in CONFIGURED_STAGES:
            if definition.capability is None:
                continue
            stage_name = definition.name
            stage = getattr(self.stages, stage_name)
            if stage.backend not in self.backends:
                raise ValueError(
                    f"stages.{stage_name}.backend '{stage.backend}' is not defined under `backends` "
                    f"(defined: {sorted(self.backends)})"
                )
        for name in self.stages.judge.cascade or []:
            if name not in self.backends:
                raise ValueError(
                    f"stages.judge.cascade: backend '{name}' is not defined under `backends` "
                    f"(defined: {sorted(self.backends)})"
                )
        return self

    def prompts_path(self) -> Path:
        return Path(self.prompts_dir) if self.prompts_dir else PROMPTS_DIR

    def hashed_view(self) -> dict[str, Any]:
        """The part of the config that decides the output rows; a change here is a config change.

        Left out on purpose: how fast and where it runs (workers, concurrency, engine kind, Ray address),
        how much to spend (limit, budget, rate limits, retries, prices) and where keys and servers live.
        """
        view = self.model_dump(mode="json")
        view.pop("limit", None)
        view.pop("limits", None)
        view.pop("retry", None)
        view.pop("prices", None)
        view.pop("prompts_dir", None)
        view["engine"] = {"shard_size": self.engine.shard_size}
        if view["source"].get("type") is None:  # unset, the class comes from the spec: hashes as before the field
            view["source"].pop("type", None)
        for backend in view["backends"].values():
            for volatile in ("base_url", "api_key_env", "timeout_s", "resources", "serve"):
                backend.pop(volatile, None)
        if self.stages.chain.turns == 1:  # single-turn runs hash as before chains existed
            view["stages"].pop("chain", None)
        for stage in view["stages"].values():
            for how in ("concurrency", "resources", "mode", "batch"):  # online or batch: the same replies, rows
                stage.pop(how, None)
        return view


def pipeline_hash(config: PipelineConfig, prompt_hashes: dict[str, str]) -> str:
    blob = json.dumps({"config": config.hashed_view(), "prompts": prompt_hashes}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resolve_pipeline_path(name_or_path: str) -> Path:
    """`default` → the built-in pipelines/default.yaml (shipped in the package); anything with a suffix or a
    slash is a path to the user's own file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or "/" in name_or_path:
        if not path.exists():
            raise ConfigError(f"pipeline file not found: {name_or_path}")
        return path
    candidate = PIPELINES_DIR / f"{name_or_path}.yaml"
    if not candidate.exists():
        known = bundled.builtin_pipelines()
        raise ConfigError(f"unknown pipeline '{name_or_path}'; built-in pipelines: {', '.join(known)}")
    return candidate


def format_validation_error(err: ValidationError, origin: str) -> str:
    parts = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "(top level)"
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{loc}: {msg}")
    return f"invalid pipeline config {origin}: " + "; ".join(parts)


def load_pipeline(name_or_path: str, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Read and validate a pipeline YAML; `overrides` is a nested dict merged on top (from CLI flags)."""
    path = resolve_pipeline_path(name_or_path)
    raw = read_yaml_file(path, "pipeline")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a pipeline file must be a YAML mapping, got {type(raw).__name__}")
    return parse_pipeline(raw, origin=str(path), overrides=overrides)


def parse_pipeline(
    raw: dict[str, Any], origin: str = "<dict>", overrides: dict[str, Any] | None = None
) -> PipelineConfig:
    overrides = overrides or {}
    # the overrides before merging (deep_merge recurses), then the whole: no NaN may pass into run.json
    problem = config_problem(overrides, lambda v: v.value if isinstance(v, Replace) else v)
    merged = deep_merge(raw, overrides) if problem is None else {}
    problem = problem or config_problem(merged)
    if problem:
        raise ConfigError(f"invalid pipeline config {origin}: {problem}")
    if _source_replaced(raw, overrides) and "limit" not in overrides:
        # a pipeline's `limit` was written for its own source (default.yaml's 300 for the endless offline
        # world): another source given on the command line is read whole unless --limit says otherwise
        merged["limit"] = None
    try:
        return PipelineConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, origin)) from None


def _source_replaced(raw: dict[str, Any], overrides: dict[str, Any]) -> bool:
    source = overrides.get("source")
    if isinstance(source, Replace):
        source = source.value
    spec = source.get("spec") if isinstance(source, dict) else None
    if spec is None:
        return False
    base = raw.get("source")
    base_spec = base.get("spec", "scenes") if isinstance(base, dict) else "scenes"
    return str(spec).strip() != str(base_spec).strip()


class Replace:
    """An override value that replaces the base value instead of being merged into it (`--set k={}`)."""

    def __init__(self, value: Any):
        self.value = value


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Replace):
            out[key] = value.value
        elif isinstance(value, dict):  # merged into the base's mapping, or a new one (unwrapping any Replace)
            out[key] = deep_merge(out[key] if isinstance(out.get(key), dict) else {}, value)
        else:
            out[key] = value
    return out


def diff_views(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Human-readable differences between two hashed views ('stages.judge.thresholds.coherence: 3 → 4')."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{where}: added ({json.dumps(new[key])})")
            elif key not in new:
                out.append(f"{where}: removed (was {json.dumps(old[key])})")
            else:
                out.extend(diff_views(old[key], new[key], where))
        return out
    if old != new:
        return [f"{prefix}: {json.dumps(old)} → {json.dumps(new)}"]
    return []
