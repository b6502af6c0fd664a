"""Fake GPT-4o, gpt-image-1 and Gemini servers that fail the way real models fail, each record deterministically.

`RealisticOpenAI` (Chat Completions + Images Edits) and `RealisticGemini` (generateContent) speak the real REST
protocols (they are `FakeOpenAI` / `FakeGemini` underneath), but every reply is played from a `Playbook`: the
records the run will see (`Case`: question, answer, category, where the target sits in the picture) and, per
record, one failure kind from `KINDS`. The text model classifies correctly, writes instructions that embed the
question (connectives: "if … otherwise", "unless", "when … isn't", "in every other case", "if not") and judges
leniently: 5/5/5 for everything and, in an evidence-first schema, the expected branch and no changes outside the
target — except for the kind where its own observations contradict its scores. The editors re-render every
picture at the requested size with lossy encoding, as generative editors do.

A record is found in every request by its question (`<vqa_question>…</vqa_question>`; questions are unique in
a playbook). What was played is recorded per record (`Playbook.played`).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .base import Fault, RecordedRequest, Reply, fill_schema, parse_fault
from .gemini_server import FakeGemini, _get
from .openai_server import FakeOpenAI, error_reply
from .real_edits import Box, Stroke, gemini_size, openai_size, render_edit
from .real_trees import Cond, leaf_edits, read_tree, tree_body


@dataclass(frozen=True)
class Kind:
    """One way a record goes (wrong): `good` records must be accepted, the others must not be; `judge_only`
    kinds cannot be told from a good pair by code when the judge lies (reported, not part of the check)."""

    name: str
    what: str
    good: bool = False
    conditional: bool = False  # needs a conditional plan
    judge_only: bool = False


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("good", "a correct local edit (re-rendered, lossy encoded)", good=True),
    Kind("good_drift", "a correct edit, the whole picture 2 % brighter, shifted 0.6 px, JPEG q80 (honest)",
         good=True),
    Kind("square_output", "a correct edit returned 1024x1024 for the 4:3 source", good=True),
    Kind("question_names_answer", "a good record whose question names the answer's word", good=True),
    Kind("no_image_then_ok", "the first edit reply has no image (text / 503), the retry is fine", good=True),
    Kind("swapped_branches", "then_edit/else_edit swapped against the instruction's clauses", conditional=True),
    Kind("noop_branch", "the other branch is a no-op in other words", conditional=True),
    Kind("same_edit_reworded", "the same edit in both branches, reworded", conditional=True),
    Kind("candidate_ignored", "the condition tests another value than the plan's candidate", conditional=True),
    Kind("answer_form_outside", "a form of the answer outside the condition (grey-tinted, cubes, three)"),
    Kind("answer_leaked", "the answer stated in the lead-in"),
    Kind("rewriter_refusal", "GPT-4o refuses to write the instruction"),
    Kind("truncated_json", "the rewrite reply is cut off (finish_reason length): unparseable JSON"),
    Kind("unchanged", "the editor returns the source unchanged"),
    Kind("reencoded", "the editor returns the source resampled and JPEG re-encoded"),
    Kind("global_rerender", "the edit plus a global colour shift of every pixel"),
    Kind("reframed", "the edit plus a zoom/pan of the whole view"),
    Kind("oversized_edit", "the edit plus the whole floor repainted (38 % of the picture)"),
    Kind("tiny_region", "only a 4x4-pixel speck far from the target changes"),
    Kind("editor_refusal", "the editor refuses (moderation 400 / text instead of an image)"),
    Kind("judge_contradicts", "the wrong branch is drawn; the judge observes it yet scores 5/5/5",
         conditional=True),
    Kind("wrong_object", "the edit lands on another object (a lying judge hides it)", judge_only=True),
)}  # fmt: skip

EDIT_COLOURS = ("gold", "maroon", "black", "teal", "navy", "olive")
#: added things: no offline-world shape word, no number word, so they never leak a shape or count answer
THINGS = ("paper lantern", "wooden crate", "star-shaped sticker", "little flag", "glass bottle", "tin can")
NO_OPS = (
    "the picture should stay exactly the way it looks now",
    "let the scene be as it is",
    "the image needs no further work",
    "simply hand the photo back as you received it",
    "skip the edit entirely",
    "the scene stays just as it was photographed",
)
#: one edit said twice: (then wording, else wording); {d} the target, {c} a colour, {t} a thing
SAME_EDIT = (
    ("repaint {d} {c}", "paint {d} in a {c} colour"),
    ("recolour {d} to {c}", "give {d} a coat of {c} paint"),
    ("make {d} {c}", "turn {d} {c}"),
)
SAME_EDIT_FLOOR = (
    ("paint a {c} stripe along the front edge of the floor", "add a {c}-coloured band at the front edge of the floor"),
    ("put a small {c} {t} in the front left corner of the floor",
     "place a little {c} {t} at the front left corner of the floor"),
)
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve")  # fmt: skip
LEADS = (
    "Answer this question about the original image: {q}",
    "Work out, from the original image: {q}",
    "Look at the original image and decide: {q}",
)


@dataclass
class Case:
    """One record as the fake models know it. `target` / `other`: boxes (fractions) of the object the question
    is about and of another object; `ref`: how the instructions name the target (never the answer)."""

    question: str
    answer: str
    category: str  # color | shape | count
    kind: str
    target: Box
    other: Box
    ref: str


def _stable(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


# field values hold no tags (the prompt renderer neutralises them); the system text only names the tags
_QUESTION = re.compile(r"<vqa_question>([^<]*)</vqa_question>")
_PLAN = re.compile(r"<vqa_plan>([^<]*)</vqa_plan>")
_PLAN_STYLE = re.compile(r"style: (\w+)")
_PLAN_CANDIDATE = re.compile(r"candidate: (?:'([^'\n]*)'|\"([^\"\n]*)\"|(none given))")
_AESTHETICS = re.compile(r"<vqa_aesthetics>([^<]*)</vqa_aesthetics>")


def plan_text(text: str) -> str:
    """The rewrite prompt's plan field (empty when the prompt has none)."""
    found = _PLAN.findall(text)
    return found[-1] if found else ""


@dataclass
class Written:
    """What the fake rewriter wrote for a record (so the editor and the judge can act on it)."""

    style: str
    kind: str
    instruction: str
    then_edit: str | None = None
    else_edit: str | None = None
    expected: str = ""  # "then" | "else" | "" (by the instruction's own clauses)
    strokes: dict[str, list[Stroke]] = field(default_factory=dict)  # "then" | "else" | path | "edit" → pixels
    branches: dict[str, str] = field(default_factory=dict)  # a tree plan's reply: path → edit


class Playbook:
    """The cases, what the rewriter wrote for each, and what was played (thread-safe)."""

    def __init__(self, cases: list[Case]):
        self.cases = {c.question: c for c in cases}
        if len(self.cases) != len(cases):
            raise ValueError("a playbook needs unique questions (they identify a record in every request)")
        self._by_length = sorted(self.cases, key=len, reverse=True)
        self.written: dict[str, Written] = {}
        self.calls: Counter[tuple[str, str]] = Counter()
        self.played: dict[str, str] = {}  # question -> kind actually played
        self._lock = threading.Lock()

    # -- finding the record --------------------------------------------------------------------------------
    def case_of(self, text: str) -> Case | None:
        for match in _QUESTION.finditer(text):
            found = self.cases.get(match.group(1).strip())
            if found is not None:
                return found
        return next((self.cases[q] for q in self._by_length if q in text), None)

    def count(self, case: Case, task: str) -> int:
        with self._lock:
            self.calls[(case.question, task)] += 1
            return self.calls[(case.question, task)]

    # -- classify ----------------------------------------------------------------------------------------
    def classify(self, case: Case) -> dict[str, Any]:
        return {"task_category": case.category, "process_answer": case.answer}

    # -- rewrite -----------------------------------------------------------------------------------------
    def rewrite(self, case: Case, text: str) -> dict[str, Any]:
        style_match = _PLAN_STYLE.search(plan_text(text))
        style = style_match.group(1) if style_match else "synthesis"
        kind = case.kind
        if KINDS[kind].conditional and style != "conditional":  # the plan drew otherwise: a stand-in kind
            stand_ins = ("answer_form_outside", "unchanged", "global_rerender", "reencoded")
            kind = stand_ins[_stable(case.question) % len(stand_ins)]
        aesthetics = _AESTHETICS.search(text)
        closing = (aesthetics.group(1).strip() if aesthetics else "") or "Keep everything else exactly as it is."
        seed = _stable(case.question)
        lead = LEADS[seed % len(LEADS)].format(q=case.question)
        if kind == "answer_leaked":
            attribute = {"color": "colour", "shape": "shape", "count": "number"}[case.category]
            lead += f" (The {attribute} is {case.answer}.)"
        candidate = (written_candidate(text, case) or "").lower()
        colours = [c for c in EDIT_COLOURS if c != candidate]  # "if it is white, repaint it white" is no test
        first = colours[seed % len(colours)]
        second = colours[(seed % len(colours) + 1 + (seed // 7) % (len(colours) - 1)) % len(colours)]
        thing = THINGS[(seed // 36) % len(THINGS)]
        tree = read_tree(plan_text(text)) if style == "conditional" else None
        if tree is not None:
            written = self._tree(case, kind, tree, lead, closing, seed)
        elif style == "conditional":
            written = self._conditional(case, kind, text, lead, closing, first, second, thing, seed)
        else:
            written = self._synthesis(case, kind, style, lead, closing, second, thing, plan_text(text))
        with self._lock:
            self.written[case.question] = written
            self.played[case.question] = written.kind
        if tree is not None:
            return {"instruction": written.instruction, "then_edit": None, "else_edit": None, "candidate": None,
                    "branches": [{"path": p, "edit": e} for p, e in written.branches.items()]}
        return {
            "instruction": written.instruction,
            "then_edit": written.then_edit if style == "conditional" else None,
            "else_edit": written.else_edit if style == "conditional" else None,
            "candidate": written_candidate(text, case) if style == "conditional" else None,
        }

    def _edits(self, case: Case, first: str, second: str, thing: str) -> tuple[str, str, Stroke, Stroke]:
        """The then- and else-edits (text and pixels) for a record."""
        x0, y0, x1, y1 = case.target
        if case.category == "count":
            then_edit = f"paint a {first} stripe along the front edge of the floor"
            else_edit = f"put a small {second} {thing} in the front left corner of the floor"
            return (then_edit, else_edit, Stroke((0.05, 0.9, 0.95, 0.96), first),
                    Stroke((0.03, 0.78, 0.13, 0.9), second))
        then_edit = f"repaint {case.ref} {first}"
        else_edit = f"place a small {second} {thing} right beside {case.ref}"
        w, h = (x1 - x0) * 0.6, (y1 - y0) * 0.6
        beside = (min(x1 + 0.01, 0.97 - w), y1 - h, min(x1 + 0.01, 0.97 - w) + w, y1)
        return then_edit, else_edit, Stroke(case.target, first, ellipse=True), Stroke(beside, second)

    def _conditional(
        self, case: Case, kind: str, text: str, lead: str, closing: str, first: str, second: str, thing: str,
        seed: int,
    ) -> Written:
        candidate = written_candidate(text, case) or case.answer
        then_edit, else_edit, then_px, else_px = self._edits(case, first, second, thing)
        expected = "then" if same_word(candidate, case.answer) else "else"
        strokes = {"then": [then_px], "else": [else_px]}
        tested = candidate
        fields = (then_edit, else_edit)
        if kind == "candidate_ignored":
            tested = distractor(case, avoid=(candidate, case.answer))
            expected = "else"  # the instruction tests a value that is not the answer
        elif kind == "noop_branch":
            no_op = NO_OPS[_stable(case.question + "/no-op") % len(NO_OPS)]
            then_edit, else_edit = (no_op, else_edit) if expected == "else" else (then_edit, no_op)
            strokes = {"then": [then_px] if expected == "then" else [], "else": [else_px] if expected == "else" else []}
            fields = (then_edit, else_edit)
        elif kind == "same_edit_reworded":
            pairs = SAME_EDIT_FLOOR if case.category == "count" else SAME_EDIT
            pair = pairs[_stable(case.question + "/same") % len(pairs)]
            then_edit, else_edit = (w.format(d=case.ref, c=first, t=thing) for w in pair)
            floor_corner = case.category == "count" and "corner" in pair[0]
            same = Stroke(else_px.box, first) if floor_corner else then_px
            strokes = {"then": [same], "else": [same]}
            fields = (then_edit, else_edit)
        elif kind == "answer_form_outside":
            form = answer_form(case)
            else_edit = (f"put {form} small {second} {thing}s in the front left corner of the floor"
                         if case.category == "count" else
                         f"place a small {form} {thing} right beside {case.ref}" if case.category == "color" else
                         f"place a small {second} {thing} between the {form} on the floor")
            fields = (then_edit, else_edit)
        elif kind == "swapped_branches":
            fields = (else_edit, then_edit)  # the reply's fields, against the instruction's own clauses
        connective = _stable(case.question + "/connective") % 5
        if connective == 0:
            body = f"If the answer is {tested}, {then_edit}; otherwise, {else_edit}."
        elif connective == 1:
            body = f"Unless the answer is {tested}, {else_edit}; if it is {tested}, {then_edit}."
        elif connective == 2:
            body = f"When the answer is {tested}, {then_edit}; in every other case, {else_edit}."
        elif connective == 3:
            body = f"When the answer isn't {tested}, {else_edit}. If it is {tested}, {then_edit}."
        else:
            body = f"If the answer is not {tested}, {else_edit}; otherwise, {then_edit}."
        return Written("conditional", kind, f"{lead} {body} {closing}", fields[0], fields[1], expected, strokes)

    def _tree(self, case: Case, kind: str, tree: Any, lead: str, closing: str, seed: int) -> Written:
        """A tree plan's instruction and `branches` (tests/fakes/real_trees.py), the kind applied to the tree."""
        avoid = tree.operands() | {case.answer.lower()}
        colours = [c for c in EDIT_COLOURS if c not in avoid]
        made = leaf_edits(case.category, case.ref, case.target, colours, THINGS, seed, len(tree.paths))
        edits = {path: text for path, (text, _) in zip(tree.paths, made, strict=True)}
        strokes = {path: [stroke] for path, (_, stroke) in zip(tree.paths, made, strict=True)}
        top = tree.top
        if kind == "candidate_ignored" and top is not None and top.operands:  # tests another value
            values = [distractor(case, avoid=tuple(avoid | {o.lower() for o in top.operands}))]
            if top.operator == "parity":
                values = ["odd" if top.operands[0] == "even" else "even"]
            top = Cond(top.place, top.operator, values + top.operands[1:], top.question, top.join)
        expected = tree.path_for(case.answer, top)
        wrong = [p for p in tree.paths if p != expected]
        said = dict(edits)  # what the instruction's clauses say; `edits` becomes the reply's tree
        if kind == "noop_branch" and wrong:
            said[wrong[0]] = edits[wrong[0]] = NO_OPS[_stable(case.question + "/no-op") % len(NO_OPS)]
            strokes[wrong[0]] = []
        elif kind == "same_edit_reworded" and wrong:
            pairs = SAME_EDIT_FLOOR if case.category == "count" else SAME_EDIT
            pair = pairs[_stable(case.question + "/same") % len(pairs)]
            first, second = (w.format(d=case.ref, c=colours[0], t=THINGS[0]) for w in pair)
            said[expected], said[wrong[0]] = edits[expected], edits[wrong[0]] = first, second
            strokes[wrong[0]] = strokes[expected]
        elif kind == "answer_form_outside" and wrong:
            said[wrong[-1]] = edits[wrong[-1]] = f"{edits[wrong[-1]]} next to {answer_form(case)} marbles"
        elif kind == "swapped_branches" and len(tree.paths) > 1:
            # the reply's edits of the holding side and of the other side exchanged against the clauses
            sides: dict[str, list[str]] = {}
            for path in tree.paths:
                sides.setdefault(path.split("/")[0], []).append(path)
            groups = list(sides.values()) if len(sides) > 1 else [[p] for p in tree.paths]
            x, y = groups[0][0], groups[1][0]
            edits[x], edits[y] = said[y], said[x]
        body = tree_body(tree, said, seed, top)
        return Written("conditional", kind, f"{lead} {body} {closing}", expected=expected, strokes=strokes,
                       branches=edits)

    def _synthesis(
        self, case: Case, kind: str, style: str, lead: str, closing: str, colour: str, thing: str, plan: str = ""
    ) -> Written:
        x0, y0, x1, y1 = case.target
        w, h = (x1 - x0) * 0.6, (y1 - y0) * 0.6
        beside = (min(x1 + 0.01, 0.97 - w), y1 - h, min(x1 + 0.01, 0.97 - w) + w, y1)
        form = answer_form(case) if kind == "answer_form_outside" else None
        if case.category == "color":
            edit = f"add a {thing} painted in that same {form + ' ' if form else ''}colour right beside {case.ref}"
            stroke = Stroke(beside, case.answer)  # the answer's colour: what the instruction asks for
        elif case.category == "shape":
            where = f"among the {form}" if form else f"next to {case.ref}"
            edit = f"place a small {colour} object of that same shape {where}"
            stroke = Stroke(beside, colour)
        else:
            many = ("a marble more than that many" if "add one more new object" in plan else
                    "that many" if "add exactly as many" in plan or "remove all but one" not in plan else
                    "a marble fewer than that many")  # the plan's count arithmetic
            edit = (f"line up {form} small {colour} marbles" if form else
                    f"line up {many} small {colour} marbles") + " along the front edge of the floor"
            stroke = Stroke((0.1, 0.88, 0.9, 0.95), colour)
        instruction = f"{lead} Then {edit}. {closing}"
        return Written(style, kind, instruction, strokes={"edit": [stroke]}, expected="")

    # -- edit --------------------------------------------------------------------------------------------
    def edit(self, case: Case, source: bytes, size: tuple[int, int]) -> bytes:
        written = self.written.get(case.question)
        if written is None:  # an edit before any rewrite (cannot happen in a run): a plain local edit
            return render_edit(source, "ok", [Stroke(case.target, "gold", True)], [], size)
        kind = written.kind
        if written.style == "conditional":
            branch = written.expected
            if kind == "judge_contradicts":
                others = [p for p in written.strokes if p != branch] if written.branches else []
                branch = others[0] if others else ("else" if branch == "then" else "then")
            strokes = written.strokes.get(branch, [])
        else:
            strokes = written.strokes.get("edit", [])
        if case.category == "count":  # a floor-wide edit has no object to miss: the other object gets it
            wrong = [Stroke(case.other, s.colour, True) for s in strokes[:1]]
        else:
            wrong = [Stroke(_shift(s.box, case.target, case.other), s.colour, s.ellipse) for s in strokes]
        play = {"unchanged": "unchanged", "reencoded": "reencoded", "global_rerender": "global",
                "reframed": "reframed", "tiny_region": "speck", "square_output": "square",
                "wrong_object": "wrong", "good_drift": "drift", "oversized_edit": "oversized"}.get(kind, "ok")  # fmt: skip
        if not strokes and play == "ok":  # a no-op branch that applies: the editor changes nothing
            play = "reencoded"
        return render_edit(source, play, strokes, wrong, size)

    # -- judge -------------------------------------------------------------------------------------------
    def judge(self, case: Case, text: str) -> dict[str, Any]:
        written = self.written.get(case.question)
        kind = written.kind if written else "good"
        conditional = bool(written and written.style == "conditional")
        observed = observation(case, written)
        hints: dict[str, Any] = {
            "instruction_following": 5, "visual_quality": 5, "coherence": 5, "score": 5,
            "observed_changes": observed,
            "branch_observed": "expected" if conditional else "not_conditional",
            "changes_outside_target": False,
            "analysis": "The edit carries out the expected outcome cleanly and blends naturally with the source.",
        }  # fmt: skip
        if kind == "judge_contradicts":
            hints["branch_observed"] = "other"
            hints["analysis"] = ("The edited image shows the other branch's edit, not the expected outcome; "
                                 "the expected change is absent. The image quality is excellent.")
        return hints


def _shift(box: Box, target: Box, other: Box) -> Box:
    """`box` moved by the offset from the target to the other object."""
    dx, dy = other[0] - target[0], other[1] - target[1]
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


def same_word(a: str, b: str) -> bool:
    return a.strip().lower() == b.strip().lower()


def written_candidate(text: str, case: Case) -> str | None:
    """The plan's candidate from the rewrite prompt, or a proposed distractor when the plan asks for one."""
    match = _PLAN_CANDIDATE.search(plan_text(text))
    if match is None:
        return None
    if match.group(3):
        return distractor(case, avoid=(case.answer,))
    return match.group(1) if match.group(1) is not None else match.group(2)


def distractor(case: Case, avoid: tuple[str, ...]) -> str:
    avoided = {a.strip().lower() for a in avoid}
    if case.category == "count":
        pool = [str(n) for n in range(1, 10)]
    elif case.category == "shape":
        pool = ["cube", "sphere", "cylinder", "cone"]
    else:
        pool = ["red", "blue", "green", "yellow", "purple", "cyan", "brown", "orange", "pink", "gray"]
    choices = [p for p in pool if p not in avoided]
    return choices[_stable(case.question + "|".join(sorted(avoided))) % len(choices)]


def answer_form(case: Case) -> str:
    """A form of the answer that is not the answer's own word: "grey-tinted", "cubes", "three"."""
    if case.category == "count":
        number = int(case.answer)
        return NUMBER_WORDS[number] if number < len(NUMBER_WORDS) else f"{number} or so"
    if case.category == "shape":
        return case.answer + "s"
    return {"gray": "grey-tinted"}.get(case.answer, f"{case.answer}-tinted")


def observation(case: Case, written: Written | None) -> str:
    """What an honest observer would write in `observed_changes` (the lenient verdict comes after it)."""
    kind = written.kind if written else "good"
    return {
        "unchanged": "No visible change between the two images.",
        "reencoded": "The edited image looks like the original, slightly softer.",
        "global_rerender": "The requested change was made, and the whole image is warmer and brighter.",
        "reframed": "The requested change was made, and the view is zoomed in and shifted.",
        "oversized_edit": "The requested change was made, and the whole floor changed colour too.",
        "tiny_region": "A tiny dark dot appeared in the top-left corner.",
        "wrong_object": f"A change was made, on an object other than {case.ref}.",
        "judge_contradicts": "The change of the other branch was made.",
    }.get(kind, f"The change the instruction asks for was made on {case.ref}.")


# -- the servers ----------------------------------------------------------------------------------------------
def _texts_of(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    parts: list[str] = []
    for message in body.get("messages") or []:
        content = message.get("content")
        parts += [content] if isinstance(content, str) else [p.get("text", "") for p in content or []
                                                             if isinstance(p, dict)]
    if "fields" in body:
        parts.append(str((body.get("fields") or {}).get("prompt", "")))
    for content in list(body.get("contents") or []) + [_get(body, "systemInstruction", "system_instruction") or {}]:
        parts += [str(p.get("text", "")) for p in (content or {}).get("parts") or [] if "text" in p]
    return "\n".join(parts)


def _schema_of(body: Any) -> Any:
    if not isinstance(body, dict):
        return None
    json_schema = (body.get("response_format") or {}).get("json_schema") or {}
    return json_schema.get("schema")


def text_task(request: RecordedRequest, text: str) -> str:
    """classify | rewrite | judge | unknown, from the schema's fields first, then the prompt."""
    schema = _schema_of(request.body)
    props = set((schema or {}).get("properties") or {})
    if "task_category" in props:
        return "classify"
    if props & {"instruction_following", "visual_quality", "coherence", "branch_observed", "score"}:
        return "judge"
    if plan_text(text) or "instruction" in props:
        return "rewrite"
    return request.task or "unknown"


class RealisticOpenAI(FakeOpenAI):
    """GPT-4o (classify, rewrite, judge) and gpt-image-1 (`images.edit`) played from a playbook."""

    def __init__(self, playbook: Playbook, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.playbook = playbook
        self.script(self._decide)

    def _decide(self, request: RecordedRequest) -> Any:
        text = _texts_of(request.body)
        case = self.playbook.case_of(text)
        if case is None or request.task == "edit":
            return None
        task = text_task(request, text)
        book = self.playbook
        book.count(case, task)
        if task == "classify":
            return {"content": fill_schema(_schema_of(request.body) or {}, book.classify(case))}
        if task == "rewrite":
            if case.kind == "rewriter_refusal":
                with book._lock:
                    book.played[case.question] = case.kind
                return "refusal"
            content = fill_schema(_schema_of(request.body) or {}, book.rewrite(case, text))
            if case.kind == "truncated_json":
                return {"fault": "truncated", "content": content}
            return {"content": content}
        if task == "judge":
            return {"content": fill_schema(_schema_of(request.body) or {}, book.judge(case, text))}
        return None

    def _edit(self, record: RecordedRequest, body: dict[str, Any], fault: Fault) -> Reply:
        text = _texts_of(body)
        case = self.playbook.case_of(text)
        files = body.get("files") or {}
        images = files.get("image") or files.get("image[]") or []
        if case is None or not images:
            return super()._edit(record, body, fault)
        calls = self.playbook.count(case, "edit")
        if case.kind == "editor_refusal":
            return self._fault_reply(parse_fault("moderation")) or error_reply(400, "blocked")
        if case.kind == "no_image_then_ok" and calls == 1:
            return error_reply(503, "The server is overloaded. Please try again later.")
        source = images[0]["data"]
        from .real_edits import decode

        size = openai_size((body.get("fields") or {}).get("size"), decode(source).size)
        edited = self.playbook.edit(case, source, size)
        reply = super()._edit(record, body, fault)  # usage and envelope as the plain fake builds them
        from .base import b64

        reply.body["data"] = [{"b64_json": b64(edited)}]
        return reply


class RealisticGemini(FakeGemini):
    """Gemini image editing (`generateContent` with IMAGE output) played from a playbook."""

    def __init__(self, playbook: Playbook, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.playbook = playbook
        self.script(self._decide)

    def _decide(self, request: RecordedRequest) -> Any:
        if request.task != "edit":
            return None
        case = self.playbook.case_of(_texts_of(request.body))
        if case is None:
            return None
        calls = self.playbook.count(case, "edit")
        if case.kind == "editor_refusal":
            return {"fault": "noimage", "text": "I'm unable to edit this image as requested."}
        if case.kind == "no_image_then_ok" and calls == 1:
            return {"fault": "noimage", "text": "Here is a description of the edit instead of an image."}
        return None

    def _edit(self, record: RecordedRequest, modalities: list[str], texts: list[str], images: list[bytes],
              fault: Fault) -> Reply:
        case = self.playbook.case_of("\n".join(texts))
        if case is None or not images:
            return super()._edit(record, modalities, texts, images, fault)
        from .base import b64
        from .real_edits import decode

        config = _get(record.body or {}, "generationConfig", "generation_config", {}) or {}
        image_config = _get(config, "imageConfig", "image_config", {}) or {}
        aspect = _get(image_config, "aspectRatio", "aspect_ratio")
        edited = self.playbook.edit(case, images[0], gemini_size(aspect, decode(images[0]).size))
        reply = super()._edit(record, modalities, texts, images, fault)
        for part in reply.body["candidates"][0]["content"]["parts"]:
            if "inlineData" in part:
                part["inlineData"]["data"] = b64(edited)
        return reply
