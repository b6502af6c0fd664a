"""The pipeline config: pydantic models for the YAML, loading with clear errors, and the pipeline hash."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from . import bundled
from .errors import ConfigError
from .records import RejectReason
from .values import check_backend_type, check_threshold, config_problem
from .yaml_bounds import MAX_YAML_NODES, load_yaml_text, read_yaml_file  # noqa: F401 - load_yaml_text: the CLI's

#: the built-in pipelines and prompts (bundled.py: inside the installed package, or the checkout's top level)
PIPELINES_DIR = bundled.pipelines_dir()
PROMPTS_DIR = bundled.prompts_dir()


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # no NaN or Infinity: run.json is JSON


class ActorResources(Strict):
    """What a shard worker (a Ray actor) asks Ray for, so that e.g. a local GPU model lands on a GPU node.

    `resources` are Ray custom resources (`{"a100": 1}`, as declared by `ray start --resources`)."""

    num_cpus: float | None = Field(default=None, ge=0)
    num_gpus: float | None = Field(default=None, ge=0)
    memory_mb: float | None = Field(default=None, ge=0)
    resources: dict[str, float] = Field(default_factory=dict)

    def merged(self, other: ActorResources) -> ActorResources:
        """The larger of each amount: one worker runs every stage, so it needs what its most demanding
        backend needs."""

        def larger(a: float | None, b: float | None) -> float | None:
            return b if a is None else a if b is None else max(a, b)

        names = set(self.resources) | set(other.resources)
        return ActorResources(
            num_cpus=larger(self.num_cpus, other.num_cpus),
            num_gpus=larger(self.num_gpus, other.num_gpus),
            memory_mb=larger(self.memory_mb, other.memory_mb),
            resources={k: max(self.resources.get(k, 0.0), other.resources.get(k, 0.0)) for k in sorted(names)},
        )

    def actor_options(self) -> dict[str, Any]:
        """Ray actor options for these resources. A shard worker is an asyncio process that waits on the network
        most of the time, so by default it reserves no CPU (num_cpus=0) and packs next to others."""
        options: dict[str, Any] = {"num_cpus": self.num_cpus or 0}
        if self.num_gpus:
            options["num_gpus"] = self.num_gpus
        if self.memory_mb:
            options["memory"] = int(self.memory_mb * 1024 * 1024)
        if self.resources:
            options["resources"] = dict(self.resources)
        return options


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

    @field_validator("dedup", mode="before")
    @classmethod
    def _dedup_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"by": value}
        if value is True:
            return {}
        if value is False:
            return None
        return value


class BatchSpec(Strict):
    """How a batch-mode stage sends its calls as provider batch jobs (engine/batch.py)."""

    #: requests per job (OpenAI allows 50,000 per input file)
    max_requests: int = Field(default=50_000, ge=1, le=1_000_000)
    #: bytes of requests per job (an OpenAI input file: 200 MB; Gemini sends a job over 20 MB as a file)
    max_bytes: int = Field(default=200_000_000, ge=1_000)
    #: seconds between polls of a job in flight
    poll_s: float = Field(default=30.0, gt=0, le=3600)
    #: seconds a wave's requests wait for the waves of the worker's other shards, to share their jobs
    group_s: float = Field(default=10.0, ge=0, le=3600)
    #: the provider's window (OpenAI accepts "24h" only)
    completion_window: str = "24h"
    #: how many jobs may fail (or expire) for one request before giving up on batch for it
    max_job_attempts: int = Field(default=3, ge=1, le=100)
    #: after `max_job_attempts`: "online" sends the request online, "stop" stops the run
    on_failure: Literal["online", "stop"] = "online"


class StageOptions(Strict):
    """What every stage accepts: its concurrency (per worker), free-form `params`, and what a worker running
    it asks Ray for (`resources`, merged with its backends' and engine.worker_resources)."""

    concurrency: int = Field(default=16, ge=1, le=4096)
    params: dict[str, Any] = Field(default_factory=dict)
    resources: ActorResources | None = None


class StageBase(StageOptions):
    """A stage that calls a model: the backend it uses and its prompt template."""

    backend: str
    prompt: str | None = None
    #: "batch": cache misses go out as provider batch jobs (half the price, up to a day's turnaround)
    mode: Literal["online", "batch"] = "online"
    batch: BatchSpec = Field(default_factory=BatchSpec)


class ClassifySpec(StageBase):
    enabled: bool = True
    trust_source_category: bool = True
    drop_categories: list[str] = Field(default_factory=lambda: ["multi-choice", "yes_no", "others"])
    category_caps: dict[str, int] = Field(default_factory=dict)
    prompt: str | None = "classify.txt"


class RewriteSpec(StageBase):
    prompt: str | None = "rewrite/{category}.txt"
    leak_check: bool = True
    aesthetics_directive: str = ""
    #: per-category style mix of the instruction plan (plan.py); categories left out keep the built-in mix,
    #: `default` covers categories with no entry
    styles: dict[str, dict[str, float]] = Field(default_factory=dict)
    #: P(the conditional's candidate is the answer); the release's coin flip is 0.5
    candidate_is_answer_p: float = Field(default=0.5, ge=0.0, le=1.0)
    #: the `reasoning` column (reasoning.py): `template` builds it from the plan and the answer, `model` asks
    #: the rewriter's backend to phrase it in a cheap follow-up call, `rewrite_call` in the rewrite reply itself
    #: (a `reasoning` field); a model's trace that contradicts the plan falls back to the template; `off`
    reasoning: Literal["off", "template", "model", "rewrite_call"] = "template"
    reasoning_prompt: str = "reason.txt"

    @field_validator("styles")
    @classmethod
    def _known_styles(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        from .plan import STYLES

        for category, mix in value.items():
            unknown = set(mix) - set(STYLES)
            if unknown:
                raise ValueError(f"styles.{category}: unknown style(s) {sorted(unknown)}; known: {list(STYLES)}")
            if any(float(w) < 0 for w in mix.values()) or not any(float(w) > 0 for w in mix.values()):
                raise ValueError(f"styles.{category}: weights must be >= 0 with at least one > 0")
        return value


#: the instruction styles (method/plan.py STYLES) plus `default`, the keys of `gates.max_changed_share`
GATE_STYLES = ("conditional", "synthesis", "render", "transform", "default")
#: edit parameters that can fix the editor's output geometry (Gemini `aspect_ratio`, gpt-image-1 `size`)
GEOMETRY_PARAMS = ("aspect_ratio", "size")


class PixelGatesSpec(Strict):
    """`stages.edit.gates`: the pixel gates run on every edit before the judge is paid (method/pixel_gates.py;
    the defaults are calibrated in benchmarks/pixel_gates.py). A failed gate asks the editor again while
    `max_attempts` allow, then rejects the record (`no_op_edit`, `over_edited`) without a judge call."""

    enabled: bool = True
    #: the largest low-passed local change (grey levels, 0-255) must reach this, or the edit is a no-op
    no_op_delta: float = Field(default=25.0, gt=0, le=255)
    #: per style (and `default`): the largest share of the image the UniWorld edit mask may cover
    max_changed_share: dict[str, float] = Field(
        default_factory=lambda: {"conditional": 0.2, "synthesis": 0.3, "render": 0.25, "transform": 0.15, "default": 0.3}
    )
    #: the 25th-percentile change at or above this: the whole image shifted (a colour cast, a tone change)
    shift_delta: float = Field(default=6.0, gt=0, le=255)
    #: this share of the structured cells of an 8x8 grid changed (by no_op_delta): a global re-render or shift
    spread_share: float = Field(default=0.75, gt=0, le=1)
    #: where the edit's region is known (an offline edit program): a local change this strong outside it
    outside_delta: float = Field(default=30.0, gt=0, le=255)

    @field_validator("max_changed_share")
    @classmethod
    def _known_styles(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - set(GATE_STYLES)
        if unknown:
            raise ValueError(f"unknown style(s) {sorted(unknown)}; known: {list(GATE_STYLES)}")
        bad = {k: v for k, v in value.items() if not 0 < float(v) <= 1}
        if bad:
            raise ValueError(f"shares must be in (0, 1]; got {bad}")
        return value


class EditSpec(StageBase):
    max_attempts: int = Field(default=2, ge=1, le=10)
    #: how many times a reply without an image is asked again, per edit attempt (so up to 6 calls by
    #: default; the release's nano_api.generate makes up to 5 calls in all)
    no_image_retries: int = Field(default=5, ge=0, le=50)
    give_reference_answer: bool = True
    prompt: str | None = "edit.txt"
    #: ask the editor for the source's aspect ratio (each backend picks its closest supported geometry) and
    #: bring the edited image back to the source's size before the gates, the judge and the shard
    keep_geometry: bool = True
    gates: PixelGatesSpec = Field(default_factory=PixelGatesSpec)

    @model_validator(mode="after")
    def _one_geometry(self) -> EditSpec:
        ratio = self.params.get("aspect_ratio")
        if ratio is not None and not isinstance(ratio, str):
            raise ValueError(
                f"params.aspect_ratio must be a string such as \"4:3\"; got {ratio!r} (YAML reads an unquoted "
                "1:1 as the number 61: quote it, e.g. --set 'stages.edit.params.aspect_ratio=\"1:1\"')"
            )
        # a diffusers `size` is a long side (an int): it keeps the aspect ratio, only "WxH" or a ratio fixes one
        fixed = {
            k: v for k, v in self.params.items()
            if k in GEOMETRY_PARAMS and isinstance(v, str) and v != "auto"
        }  # fmt: skip
        if self.keep_geometry and fixed:
            name, value = next(iter(fixed.items()))
            raise ValueError(
                f"params.{name}={value!r} fixes the editor's output geometry while keep_geometry is on (the "
                f"source's aspect ratio is asked for): drop params.{name}, or set keep_geometry: false to keep "
                f"a fixed geometry such as the release's 1:1 (--set stages.edit.keep_geometry=false)"
            )
        return self


JUDGE_PROMPTS = {"three_axis": "judge.txt", "release": "judge_release.txt"}


class JudgeSpec(StageBase):
    """`preset: three_axis` (default) scores instruction following, visual quality and coherence from the
    source and edited images; `preset: release` is the Uni-Edit release's filter (data_gen/fifth_process_filter.py
    with system3.system_prompt1): the edited image only, a visual-quality score, keep >= 3."""

    preset: Literal["three_axis", "release"] = "three_axis"
    prompt: str | None = None
    thresholds: dict[str, float] = Field(
        default_factory=lambda: {"instruction_following": 3, "visual_quality": 3, "coherence": 3}
    )
    #: stricter bars where the content must be exact: categories in `exact_categories` and render-style plans
    exact_thresholds: dict[str, float] = Field(default_factory=lambda: {"instruction_following": 4})
    exact_categories: list[str] = Field(default_factory=lambda: ["count", "ocr", "math"])

    #: `[cheap, expensive]` backend names: the cheap judge (`backend` must be the first) scores every edit, the
    #: expensive one only edits in `cascade_band` and a seeded `audit_share` of the rest (stages/judge.py)
    cascade: list[str] | None = None
    #: the cheap judge is unsure when its smallest margin over the thresholds (min over axes of score -
    #: threshold) lies in this closed range; those edits go to the expensive judge
    cascade_band: tuple[float, float] = (-1.0, 0.0)
    #: share of the cheap judge's sure verdicts also sent to the expensive judge (agreement figures), seeded
    audit_share: float = Field(default=0.05, ge=0.0, le=1.0)
    #: reject (low_score) an edit whose measured non-edit consistency is below this (None: measure only)
    non_edit_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    #: ask the judge for the box of the region the instruction asked to change; where no edit program knows
    #: the region, non-edit consistency is measured outside that box (consistency.py)
    localise_edit: bool = False

    @model_validator(mode="after")
    def _cascade_shape(self) -> JudgeSpec:
        if self.cascade is not None:
            if len(self.cascade) != 2:
                raise ValueError("cascade must name two backends: [cheap, expensive]")
            if self.preset == "release":
                raise ValueError("the judge cascade scores three axes; it does not apply to preset: release")
            if self.cascade[0] != self.backend:
                raise ValueError(
                    f"cascade starts with the cheap judge, which must be the stage's backend "
                    f"({self.backend!r}); got {self.cascade[0]!r}"
                )
        if self.cascade_band[0] > self.cascade_band[1]:
            raise ValueError("cascade_band must be [low, high] with low <= high")
        return self

    @model_validator(mode="after")
    def _preset_defaults(self) -> JudgeSpec:
        if self.prompt is None or self.prompt in set(JUDGE_PROMPTS.values()) - {JUDGE_PROMPTS[self.preset]}:
            self.prompt = JUDGE_PROMPTS[self.preset]  # the other preset's prompt cannot fill this schema
        if self.preset == "release":
            if "exact_thresholds" not in self.model_fields_set:
                self.exact_thresholds = {}  # the release's filter scores visual quality only
            if "thresholds" not in self.model_fields_set:
                self.thresholds = {"visual_quality": 3}
            elif set(self.thresholds) - {"visual_quality"}:
                raise ValueError(
                    "the release judge scores visual_quality only; set thresholds to {visual_quality: 3} "
                    "(e.g. --set 'stages.judge.thresholds={visual_quality: 3}')"
                )
        return self

    @field_validator("thresholds", "exact_thresholds")
    @classmethod
    def _known_scores(cls, value: dict[str, float]) -> dict[str, float]:
        known = {"instruction_following", "visual_quality", "coherence"}
        unknown = set(value) - known
        if unknown:
            raise ValueError(f"unknown score name(s) {sorted(unknown)}; known: {sorted(known)}")
        return {name: check_threshold(name, bar) for name, bar in value.items()}


@dataclass(frozen=True)
class StageDef:
    """One stage of the pipeline. STAGE_TABLE lists them in order, and everything stage-specific derives from
    it: the worker's order, semaphores and backends, `stages.<name>` in the YAML, `--concurrency`, the prompt
    files that are hashed, the funnel in stats.json and the report's charts. A new stage is one module (a class
    built with the StageContext, whose `async __call__(item)` returns or raises `Rejected`) plus one line here.
    """

    name: str
    #: the backend kind the stage calls ("text" or "edit"); None: the stage calls no model
    capability: Literal["text", "edit"] | None
    #: "module:Class" of the stage, imported by the worker; None: built into the worker (validate)
    cls: str | None
    #: the reject reason of a record whose call at this stage failed
    failure_reason: RejectReason
    #: the YAML model of `stages.<name>` (a stage with a capability needs a StageBase, for its `backend`)
    spec: type[StageOptions] | None = StageOptions
    #: the other reasons this stage rejects records with (where the report says a record left)
    reasons: tuple[RejectReason, ...] = ()
    #: runs after the category caps are decided in shard order (the cheap stages run before)
    after_caps: bool = False
    #: a False verdict sends the record back to this earlier stage, while that stage's `max_attempts` allow
    retries: str | None = None


STAGE_TABLE: tuple[StageDef, ...] = (
    StageDef("validate", None, None, RejectReason.invalid_input, None, (RejectReason.duplicate_id,)),
    StageDef("classify", "text", "uniedit_synth.stages.classify:ClassifyStage", RejectReason.classify_failed,
             ClassifySpec, (RejectReason.filtered_category, RejectReason.category_capped)),
    StageDef("rewrite", "text", "uniedit_synth.stages.rewrite:RewriteStage", RejectReason.rewrite_failed,
             RewriteSpec, (RejectReason.leaks_answer,), after_caps=True),
    StageDef("edit", "edit", "uniedit_synth.stages.edit:EditStage", RejectReason.edit_failed, EditSpec,
             (RejectReason.safety_blocked, RejectReason.no_op_edit, RejectReason.over_edited), after_caps=True),
    StageDef("judge", "text", "uniedit_synth.stages.judge:JudgeStage", RejectReason.judge_failed, JudgeSpec,
             (RejectReason.low_score,), after_caps=True, retries="edit"),
)

#: every stage's name in order, including the worker's own validate step (the funnel's rows)
STAGE_NAMES: tuple[str, ...] = tuple(d.name for d in STAGE_TABLE)
#: the stages configured under `stages:` in the YAML
CONFIGURED_STAGES: tuple[StageDef, ...] = tuple(d for d in STAGE_TABLE if d.spec is not None)
#: the stages that call a model (they can run in batch mode: `stages.<name>.mode`)
MODEL_STAGES: tuple[str, ...] = tuple(d.name for d in STAGE_TABLE if d.capability is not None)
#: the stages a judged failure repeats (edit … judge): their calls belong to an attempt
ATTEMPT_STAGES: tuple[str, ...] = tuple(
    name for d in STAGE_TABLE if d.retries
    for name in STAGE_NAMES[STAGE_NAMES.index(d.retries):STAGE_NAMES.index(d.name) + 1]
)
#: reject reason -> the stage a record with it left at
EXIT_STAGE: dict[str, str] = {
    reason.value: d.name for d in STAGE_TABLE for reason in (d.failure_reason, *d.reasons)
}


def stage_def(name: str) -> StageDef:
    for definition in STAGE_TABLE:
        if definition.name == name:
            return definition
    raise KeyError(name)


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

        def __getattr__(self, name: str) -> Any: ...

else:
    Stages = create_model(
        "Stages", __base__=Strict, __doc__="`stages:` of the YAML, one entry per configured stage (STAGE_TABLE).",
        **{d.name: _stage_field(d) for d in CONFIGURED_STAGES},
    )


class EngineSpec(Strict):
    kind: Literal["ray", "inline"] = "ray"
    workers: int = Field(default=2, ge=1, le=1024)
    shard_size: int = Field(default=50, ge=1, le=1_000_000)
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
