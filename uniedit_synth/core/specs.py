"""The building blocks of the pipeline YAML: the strict base model, what a worker asks Ray for, and the
per-stage specs (`stages.classify`, `stages.rewrite`, `stages.edit` with its pixel gates, `stages.judge`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from .values import check_threshold


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


#: the operators a plan may draw beyond the release's "the answer is the candidate" (method/logic.py)
LOGIC_OPERATORS = ("eq", "ne", "lt", "gt", "between", "parity", "one_of")


class LogicSpec(Strict):
    """`stages.rewrite.logic`: the instruction plan's logic (docs/guides/logic.md). The defaults draw every
    form; `operators: [eq]` with the three shares at 0 and `count_arithmetic: false` is the release's single
    equality test."""

    operators: list[str] = Field(default_factory=lambda: list(LOGIC_OPERATORS))
    #: P(a condition nested in one branch: depth 2), when one can be posed without being decided in advance
    nest_p: float = Field(default=0.35, ge=0.0, le=1.0)
    #: P(a second question about the same image joined with and / or), for records with siblings
    join_p: float = Field(default=0.5, ge=0.0, le=1.0)
    #: P(a sibling's count sets a branch's amount), for records with a counting sibling
    parameter_p: float = Field(default=0.5, ge=0.0, le=1.0)
    #: count synthesis as capped arithmetic: as many as / one more than the answer (≤ 6 new), all but one
    count_arithmetic: bool = True

    @field_validator("operators")
    @classmethod
    def _known_operators(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(LOGIC_OPERATORS))
        if unknown or "eq" not in value:
            raise ValueError(f"operators: must include eq and only use {list(LOGIC_OPERATORS)}; got {value}")
        return value


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
    #: send the source image with the rewrite request, so that branch edits name objects that are there (the
    #: release sends text only: False); the cost is one input image per rewrite call (docs/guides/pipelines.md)
    with_image: bool = False
    #: the exemplar pool per category under prompts/ (a `{category}` template; a missing file falls back to
    #: `generic`): `examples_per_record` worked examples drawn per record (seeded by seed + record id) go into
    #: the rewrite prompt; None: no pool (the templates' own fixed examples only)
    examples: str | None = "examples/{category}.jsonl"
    examples_per_record: int = Field(default=2, ge=0, le=6)
    logic: LogicSpec = Field(default_factory=LogicSpec)

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


class ChainSpec(Strict):
    """`stages.chain`: multi-turn reasoning chains (docs/guides/chains.md). Turn k edits turn k-1's accepted
    image and embeds a question about it; a chain that breaks keeps its verified prefix when it has at least
    `min_turns` turns. `turns: 1` (the default) is the single-turn run."""

    turns: int = Field(default=1, ge=1, le=16)
    min_turns: int = Field(default=1, ge=1, le=16)

    @model_validator(mode="after")
    def _min_within_turns(self) -> ChainSpec:
        if self.min_turns > self.turns:
            raise ValueError(f"min_turns ({self.min_turns}) must be at most turns ({self.turns})")
        return self
