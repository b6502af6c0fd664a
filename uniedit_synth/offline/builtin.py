"""The builtin offline backends: a text backend (classify, rewrite, judge) and an image editor that need no
network and no keys.

They read the structured `request.context` the stages send, not the prose prompt. On records from the
offline world (`meta["world"] == "scenes"`) they work on the scene graph: the rewriter writes a nested-logic
instruction plus a machine-checkable edit program, the editor applies the program and re-renders, the judge
compares pixels with the expected render. On any other image they use the generic mode of
`scenes.program`. Everything is seeded by (backend seed, request content), so replies are reproducible.

Deliberate, configurable imperfection (`BackendSpec.options`), so the engine's checks have work to do:
`leak_rate` (text, default 0.0) — share of instructions that state the answer; `nested_rate` (text,
default 0.3) — share of conditional instructions whose else branch is itself a condition (two levels);
`error_rate` (edit, default 0.15) — share of edits that go visibly wrong, in one of the flaw kinds of
`scenes.program.FLAWS` (re-seeded per `attempt`, so a retry can succeed); `flaw_kinds` (edit, default
FLAWS) — which kinds to draw from, e.g. `[collateral_change]` (the right edit plus an unrelated change);
`latency_s` (both, default 0) — asynchronous sleep per call, for benchmarks.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import random
import re
from typing import Any, ClassVar

from PIL import Image

from ..backends.base import (
    Backend,
    BadRequest,
    EditReply,
    EditRequest,
    TextReply,
    TextRequest,
    Usage,
    request_key,
)
from ..core.config import BackendSpec
from ..core.errors import BackendConfigError
from ..core.plan import InstructionPlan
from ..core.records import TASK_CATEGORIES
from ..method.answers import leaks_answer, normalise_answer
from ..method.logic import plan_leak
from .choose import scene_program
from .flaws import FLAW_KINDS, FLAWS, expected_edited_png, flawed_edit
from .generic import generic_program
from .instructions import AESTHETICS_DIRECTIVE, generic_instruction_parts, scene_instruction_parts
from .logic_program import RELEASE_PLAN_KEYS, follows_logic, plan_program, plan_queries, with_candidate
from .logic_text import plan_instruction
from .observe import observe
from .program import ProgramError, scene_of
from .questions import QueryError
from .verify import verify

CALL_LOG_ENV = "UNIEDIT_CALL_LOG"
REWRITE_TRIES = 16


def log_call(task: str, digest: str) -> None:
    """Append one line per real call to $UNIEDIT_CALL_LOG (one O_APPEND write, safe across processes)."""
    path = os.environ.get(CALL_LOG_ENV)
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{task}\t{digest}\n".encode())
    finally:
        os.close(fd)


def seeded_rng(*parts: Any) -> random.Random:
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return random.Random(hashlib.sha256(blob.encode()).hexdigest())


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def is_scene_record(meta: dict[str, Any]) -> bool:
    return meta.get("world") == "scenes" and "scene" in meta and "question_spec" in meta


_CHOICES = re.compile(r"(^|\s|\()\(?[A-Da-d][).:]\s", re.MULTILINE)
_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "math",
        (
            r"\bcalculate\b",
            r"\bsum of\b",
            r"\bplus\b",
            r"\bminus\b",
            r"\bmultipl",
            r"\bdivided\b",
            r"\bequation\b",
            r"\bsolve\b",
            r"\d\s*[-+*/x×÷]\s*\d",
            r"\bresult of\b",
            r"\bhow much\b",
            r"\btotal cost\b",
        ),
    ),
    ("count", (r"\bhow many\b", r"\bnumber of\b", r"\bcount\b")),
    ("color", (r"\bwhat colou?rs?\b", r"\bcolou?r of\b", r"\bwhich colou?r\b", r"\bcolou?r is\b")),
    ("shape", (r"\bwhat shape\b", r"\bshape of\b", r"\bwhich shape\b", r"\bshaped\b")),
    (
        "ocr",
        (
            r"\bwritten\b",
            r"\bwhat does the .* say\b",
            r"\bread\b",
            r"\btext\b",
            r"\bword\b",
            r"\btitle\b",
            r"\bsign say",
            r"\blabel\b",
            r"\bbrand\b",
            r"\bletters?\b",
            r"\bnumber on\b",
        ),
    ),
    (
        "location",
        (
            r"\bwhere\b",
            r"\bleft of\b",
            r"\bright of\b",
            r"\bwhich side\b",
            r"\bbehind\b",
            r"\bin front of\b",
            r"\bposition\b",
            r"\blocated\b",
            r"\bnext to\b",
            r"\bon top of\b",
            r"\bbelow\b",
            r"\babove\b",
        ),
    ),
    (
        "caption",
        (
            r"\bdescribe\b",
            r"\bcaption\b",
            r"\bwhat is happening\b",
            r"\bwhat is going on\b",
            r"\bwhat is shown\b",
        ),
    ),
    (
        "knowledge",
        (
            r"\bwhy\b",
            r"\bwhat year\b",
            r"\bwho (invented|painted|wrote|made|designed)\b",
            r"\bwhich country\b",
            r"\bused for\b",
            r"\bmade of\b",
            r"\bfamous\b",
            r"\bspecies\b",
            r"\bwhat kind of\b",
            r"\bwhat type of\b",
            r"\bwould\b",
            r"\bcapital of\b",
        ),
    ),
)


def heuristic_category(question: str, answer: str) -> str:
    """Keyword classification for records from outside the offline world."""
    norm = normalise_answer(answer)
    if norm in ("yes", "no"):
        return "yes_no"
    if (
        _CHOICES.search(question)
        or re.fullmatch(r"\(?[a-d]\)?", norm)
        and re.search(r"\b(options?|choices?)\b", question, re.I)
    ):
        return "multi-choice"
    lowered = question.lower()
    for category, patterns in _KEYWORDS:
        if any(re.search(p, lowered) for p in patterns):
            return category
    return "others"


class _Builtin(Backend):
    name: ClassVar[str] = "builtin"
    #: the builtin models work from `request.context` (scene graph, edit program), so it is in their cache keys
    reads_context: ClassVar[bool] = True

    def __init__(self, spec: BackendSpec, seed: int = 0) -> None:
        self.spec = spec
        self.seed = seed
        self.provider = "builtin"
        self.latency_s = self._option("latency_s", 0.0, upper=3600.0)

    def _option(self, key: str, default: float, upper: float = 1.0) -> float:
        raw = self.spec.options.get(key, default)
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise BackendConfigError(
                f"builtin backend: options.{key} must be a number, got {raw!r}"
            ) from None
        if not 0.0 <= value <= upper:
            raise BackendConfigError(
                f"builtin backend: options.{key} must be between 0 and {upper}, got {value}"
            )
        return value

    async def _pause(self) -> None:
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)

    async def aclose(self) -> None:
        return None


class BuiltinText(_Builtin):
    """classify / rewrite / judge from the request's structured context."""

    def __init__(self, spec: BackendSpec, seed: int = 0) -> None:
        super().__init__(spec, seed)
        self.leak_rate = self._option("leak_rate", 0.0)
        self.nested_rate = self._option("nested_rate", 0.3)

    async def complete(self, request: TextRequest) -> TextReply:
        await self._pause()
        handlers = {
            "classify": self._classify,
            "rewrite": self._rewrite,
            "judge": self._judge,
            "reason": self._reason,
        }
        handler = handlers.get(request.task)
        if handler is None and request.response_schema:  # a stage added to the table: a reply of its schema
            handler = self._generic
        if handler is None:
            raise BadRequest(
                f"builtin text backend has no task {request.task!r} (known: {', '.join(handlers)})"
            )
        data = handler(request)
        text = json.dumps(data, ensure_ascii=False, sort_keys=True)
        usage = Usage(
            input_tokens=estimate_tokens(request.system + request.prompt),
            output_tokens=estimate_tokens(text),
            images_in=len(request.images),
        )
        log_call(request.task, request_key("text", request))  # logged as it returns: a call that returned
        return TextReply(data=data, text=text, usage=usage, model=self.spec.model)

    @staticmethod
    def _generic(request: TextRequest) -> dict[str, Any]:
        """A reply that follows the request's JSON schema (strings name the task and the field), so that a stage
        added to the table runs on the offline world without a handler here."""

        def value(schema: dict[str, Any], label: str) -> Any:
            kind = schema.get("type")
            kind = next((k for k in kind if k != "null"), "null") if isinstance(kind, list) else kind
            if schema.get("enum"):
                return schema["enum"][0]
            if kind == "object" or "properties" in schema:
                return {key: value(sub, key) for key, sub in (schema.get("properties") or {}).items()}
            if kind == "array":
                return [value(schema.get("items") or {}, label)]
            return {"string": f"builtin {request.task}: {label}", "integer": 0, "number": 0.0,
                    "boolean": False}.get(kind)

        data = value(request.response_schema or {}, request.task)
        return data if isinstance(data, dict) else {"value": data}

    @staticmethod
    def _context(request: TextRequest, *keys: str) -> dict[str, Any]:
        missing = [k for k in keys if k not in request.context]
        if missing:
            raise BadRequest(f"builtin {request.task}: request.context lacks {', '.join(missing)}")
        return request.context

    def _classify(self, request: TextRequest) -> dict[str, Any]:
        ctx = self._context(request, "question", "answer")
        meta = ctx.get("meta") or {}
        if is_scene_record(meta):
            category = str(meta["question_spec"]["category"])
        else:
            category = heuristic_category(str(ctx["question"]), str(ctx["answer"]))
        if category not in TASK_CATEGORIES:
            category = "others"
        return {"task_category": category, "process_answer": normalise_answer(str(ctx["answer"]))}

    def _rewrite(self, request: TextRequest) -> dict[str, Any]:
        """An instruction that follows the plan in `request.context["plan"]` (none: a conditional with a
        distractor candidate), plus the edit program and both branch edits."""
        ctx = self._context(request, "question", "answer")
        question, answer = str(ctx["question"]), str(ctx["answer"])
        process_answer = str(ctx.get("process_answer") or normalise_answer(answer))
        category = str(ctx.get("task_category") or "others")
        meta = ctx.get("meta") or {}
        planned = ctx.get("plan")
        plan = dict(planned or {"style": "conditional"})
        # the closing sentence is only appended: leaving it out of the draw keeps each record's program
        drawn = {k: v for k, v in plan.items() if k != "closing"}
        if not follows_logic(plan):  # the release's forms keep the draws they always had
            drawn = {k: v for k, v in drawn.items() if k in RELEASE_PLAN_KEYS}
        key = (self.seed, question, answer, process_answer, category, meta, drawn, ctx.get("repair"))
        candidate_is_answer = bool(plan.get("candidate_is_answer"))
        # a drawn plan: leaks are checked as the rewrite stage checks them (every embedded question's answer)
        drawn_plan = InstructionPlan.model_validate(planned) if planned and "depth" in planned else None
        reply: dict[str, Any] | None = None
        problem = ""
        for attempt in range(REWRITE_TRIES):  # redraw until the text keeps the answer out
            rng = seeded_rng("rewrite", key, attempt)
            try:
                branches: list[dict[str, str]] | None = None
                if is_scene_record(meta) and follows_logic(plan):
                    scene = scene_of(meta)
                    plan = with_candidate(plan, scene, meta["question_spec"], rng)
                    siblings = [dict(s) for s in ctx.get("siblings") or []]
                    avoid = (answer, *(str(s.get("answer") or "") for s in siblings))
                    program = plan_program(scene, meta["question_spec"], plan, siblings, rng, avoid)
                    queries = plan_queries(plan, meta["question_spec"], siblings)
                    questions = [question, *plan.get("questions", [])[1:]]
                    text, then_edit, else_edit, branches = plan_instruction(
                        program, plan, questions, queries, category, scene, rng
                    )
                elif is_scene_record(meta):
                    scene = scene_of(meta)
                    nested = self.nested_rate if "depth" not in plan else 0.0  # a drawn plan decides nesting
                    program = scene_program(
                        scene, meta["question_spec"], rng, avoid=answer, plan=plan, nested_rate=nested
                    )
                    text, then_edit, else_edit = scene_instruction_parts(program, question, category, scene, rng)
                else:
                    size = image_size(request, meta)
                    program = generic_program(question, answer, category, size, rng, plan=plan)
                    text, then_edit, else_edit = generic_instruction_parts(program, question, rng)
            except (ProgramError, QueryError, KeyError, TypeError, ValueError) as exc:
                problem = repr(exc)
                if not planned and plan["style"] == "conditional" and attempt >= 3:
                    # no plan given: a condition that cannot be posed in four draws is dropped
                    plan = {"style": "synthesis"}
                continue
            proposed = program.get("candidate") if plan.get("style") == "conditional" and not plan.get("candidate") else None
            reply = {
                "instruction": text,
                "then_edit": then_edit,
                "else_edit": else_edit,
                "candidate": proposed,
                "edit_program": program,
                **({"branches": branches} if branches else {}),
            }
            if drawn_plan is not None:
                leaked = plan_leak(text, drawn_plan, answer, process_answer, question)
            else:
                leaked = leaks_answer(text, answer, process_answer, candidate_is_answer=candidate_is_answer)
            if not leaked:
                break
        if reply is None:
            raise BadRequest(f"builtin rewriter found no edit program for this record: {problem}")
        if seeded_rng("leak", key).random() < self.leak_rate:
            hint = f"(Hint: the answer is {answer.strip()}.)"
            reply["instruction"] = reply["instruction"].replace(AESTHETICS_DIRECTIVE, f"{hint} {AESTHETICS_DIRECTIVE}")
        directive = request.context.get("aesthetics")
        if directive:  # the pipeline's own aesthetics directive replaces the built-in one
            reply["instruction"] = reply["instruction"].replace(AESTHETICS_DIRECTIVE, directive)
        if ctx.get("reasoning_requested"):  # stages.rewrite.reasoning: rewrite_call
            key = "/".join(plan.get("path") or [])
            leaf = next((b["edit"] for b in reply.get("branches") or [] if b["path"] == key), None)
            if leaf is not None:  # a branch tree: the edit at the end of the path that holds
                effect = leaf
            elif plan.get("style") == "conditional":
                effect = reply["then_edit"] if plan.get("expected_branch") == "then" else reply["else_edit"]
            else:
                effect = reply["instruction"]
            context = {"question": question, "answer": answer, "plan": plan, "intended_effect": effect}
            reply["reasoning"] = self._reason(TextRequest(task="reason", model=request.model, prompt="", context=context))[
                "reasoning"
            ]
        return reply

    def _reason(self, request: TextRequest) -> dict[str, Any]:
        """The reasoning follow-up: the facts of the context (answer, plan, edit) as a short prose trace."""
        ctx = self._context(request, "question", "answer", "intended_effect")
        plan = ctx.get("plan") or {}
        answer = str(ctx["answer"]).strip()
        lines = [f"1. Question: the instruction first asks: {str(ctx['question']).strip()}",
                 f"2. Answer: inspecting the image, the answer is {answer}."]
        if plan.get("style") == "conditional" and plan.get("candidate") is not None:
            holds = plan.get("expected_branch") == "then"
            lines.append(
                f"3. Branch: the condition compares the answer with {plan['candidate']}, which "
                f"{'matches' if holds else 'does not match'}, so the {'then' if holds else 'else'} branch is taken."
            )
        else:
            lines.append("3. Branch: there is no condition; the answer feeds the edit directly.")
        lines.append(f"4. Edit: {str(ctx['intended_effect'] or '').strip()}")
        return {"reasoning": "\n".join(lines)}

    def _judge(self, request: TextRequest) -> dict[str, Any]:
        if request.context.get("preset") == "release":
            return self._visual_quality(request)
        ctx = self._context(request, "edit_program")
        program = ctx["edit_program"]
        if not isinstance(program, dict) or program.get("kind") not in ("scene", "generic"):
            raise BadRequest(
                "builtin judge needs the edit_program that the builtin rewriter writes; "
                "use a real judge backend with a real rewriter"
            )
        if len(request.images) != 2:
            raise BadRequest(f"builtin judge needs [source, edited] images, got {len(request.images)}")
        meta = ctx.get("meta") or {}
        result = verify(request.images[0], request.images[1], program, meta)
        # observations first, as the evidence-first schema asks a model judge (stages/schemas.py)
        seen = observe(request.images[0], request.images[1], program, meta)
        return {**seen, "analysis": result.analysis, **result.scores}

    @staticmethod
    def _visual_quality(request: TextRequest) -> dict[str, Any]:
        """The release judge (edited image only): the offline renderer draws no blur, seams or melted shapes
        (its deliberate mistakes are semantic, which this filter does not look for), so a decodable image
        scores 5 and anything else 1."""
        if len(request.images) != 1:
            raise BadRequest(f"builtin release judge needs [edited] only, got {len(request.images)} images")
        try:
            with Image.open(io.BytesIO(request.images[0])) as image:
                image.load()
                size = image.size
        except Exception:  # PIL raises many types for broken images
            return {"analysis": "The image cannot be decoded (builtin visual check).", "score": 1}
        analysis = f"A clean {size[0]}×{size[1]} render, no visual defects (builtin visual check)."
        return {"analysis": analysis, "score": 5}


def image_size(request: TextRequest, meta: dict[str, Any]) -> tuple[int, int] | None:
    """The source image's size when the request carries it (header read only), else from meta, else None."""
    if request.images:
        try:
            with Image.open(io.BytesIO(request.images[0])) as image:
                return image.size
        except Exception:  # an undecodable image is the editor's and judge's problem, not the rewriter's
            return None
    width, height = meta.get("width"), meta.get("height")
    return (int(width), int(height)) if isinstance(width, int) and isinstance(height, int) else None


class BuiltinEditor(_Builtin):
    """Applies the edit program (scene re-render or generic panel/tint), erring at `error_rate`."""

    def __init__(self, spec: BackendSpec, seed: int = 0) -> None:
        super().__init__(spec, seed)
        self.error_rate = self._option("error_rate", 0.15)
        kinds = self.spec.options.get("flaw_kinds", list(FLAWS))
        if not isinstance(kinds, list) or not kinds or any(k not in FLAW_KINDS for k in kinds):
            raise BackendConfigError(
                f"builtin backend: options.flaw_kinds must be a non-empty list of {', '.join(FLAW_KINDS)}; "
                f"got {kinds!r}"
            )
        self.flaw_kinds = tuple(kinds)

    async def edit(self, request: EditRequest) -> EditReply:
        await self._pause()
        meta = request.context.get("meta") or {}
        program = request.context.get("edit_program") or self._fallback_program(request)
        rng = seeded_rng(
            "edit", self.seed, program, hashlib.sha256(request.image).hexdigest(), request.attempt
        )
        try:
            if rng.random() < self.error_rate:
                image = flawed_edit(request.image, program, meta, rng.choice(self.flaw_kinds), rng)
            else:
                image = expected_edited_png(request.image, program, meta)
        except (ProgramError, KeyError, TypeError, ValueError) as exc:
            raise BadRequest(f"builtin editor cannot apply this program: {exc!r}") from None
        usage = Usage(
            input_tokens=estimate_tokens(request.instruction), output_tokens=0, images_in=1, images_out=1
        )
        log_call("edit", request_key("edit", request))
        return EditReply(image=image, usage=usage, model=self.spec.model)

    def _fallback_program(self, request: EditRequest) -> dict[str, Any]:
        """A generic edit for instructions that came without a program (a real LLM rewrote them): the
        reference answer drawn on a panel or swatch. Visible and deterministic, but it cannot follow free
        prose, so expect a real judge to reject most of these."""
        try:
            with Image.open(io.BytesIO(request.image)) as image:
                size: tuple[int, int] | None = image.size
        except Exception:
            raise BadRequest("builtin editor: the source image cannot be decoded") from None
        rng = seeded_rng("fallback", self.seed, request.instruction, request.reference_answer)
        category = str(request.context.get("task_category") or "others")
        plan = request.context.get("plan") or {"style": "synthesis"}
        return generic_program(request.instruction, request.reference_answer or "", category, size, rng, plan=plan)
