"""The rewrite stage: a VQA pair and its instruction plan become an edit instruction that embeds the question,
checked against the plan and for answer leaks.

The plan checks are code, before any image is paid for: both branches name a visible action and differ in
meaning (method/edit_meaning.py: lemmas and synonyms, not a keyword list), the candidate sits in the
condition, and the reported `then_edit` / `else_edit` sit in the instruction's own clauses that run when the
condition holds / does not (method/branches.py parses the instruction, whatever the connective). A broken
rule gets one repair request, then `rewrite_failed`; a leak is `leaks_answer` at once."""

from __future__ import annotations

import json
import logging

from ..core.bundled import prompts_dir as bundled_prompts
from ..core.plan import InstructionPlan, PlanCondition, PlanLeaf
from ..core.prompts import ExamplePool, Prompt, format_example, load_examples, with_examples
from ..core.records import RejectReason
from ..core.specs import RewriteSpec
from ..method.answers import (
    candidate_in_condition,
    mentions_answer,
    normalise_text,
    same_answer,
)
from ..method.branches import branch_mismatch, read_branches
from ..method.edit_meaning import is_visible_edit, same_edit
from ..method.logic import LogicSettings, plan_leak
from ..method.plan import RELEASE_CLOSING, draw_plan
from ..method.reasoning import check_trace, intended_effect, template_trace
from .base import Rejected, StageContext, WorkItem
from .schemas import (
    REASONING_IN_REWRITE_REQUEST,
    REASONING_SCHEMA,
    REWRITE_SCHEMA,
    REWRITE_WITH_REASONING_SCHEMA,
    ReasoningReply,
    RewriteReply,
)

log = logging.getLogger(__name__)

DEFAULT_EXAMPLES = RewriteSpec.model_fields["examples"].default


def is_no_op(edit: str) -> bool:
    """A branch that asks for no visible change, by meaning (method/edit_meaning.py): no action verb that is
    not negated ("leave it unchanged", "the picture should stay exactly the way it looks now")."""
    return not is_visible_edit(edit)


def _without_directive(instruction: str, directive: str) -> str:
    return instruction.replace(directive, "").strip() if directive else instruction.strip()


OPERATOR_WORDS = {
    "eq": "the answer is {0}",
    "ne": "the answer is not {0}",
    "lt": "the answer is less than {0}",
    "gt": "the answer is greater than {0}",
    "between": "the answer is between {0} and {1} (inclusive)",
    "parity": "the answer is an {0} number",
    "one_of": "the answer is one of: {all}",
    "statement": "the yes/no question's statement is true (pose that statement as the condition)",
}
PARAMETER_WORDS = {
    "same": "add exactly as many new objects as",
    "plus_one": "add one more new object than",
    "all_but_one": "remove all but one of the objects counted by",
}


def condition_brief(condition: PlanCondition) -> str:
    return f"operator {condition.operator} on question {condition.question + 1}: {condition.worded(OPERATOR_WORDS)}"


def _uses_tree(plan: InstructionPlan) -> bool:
    """A plan beyond the release's single "the answer is the candidate" test: answered with `branches`."""
    return bool(plan.leaves) and (
        plan.depth > 1 or plan.join is not None or plan.parameter is not None or plan.operator not in (None, "eq")
    )


def plan_brief(plan: InstructionPlan) -> str:
    """The plan as the rewrite prompt states it (the `$plan` field): operators and operands, the questions to
    embed, the branch tree's paths and any count parameter; never which path holds."""
    parameter = plan.parameter
    if plan.style == "conditional" and _uses_tree(plan):
        lines = ["style: conditional"]
        if len(plan.questions) > 1:
            lines.append("questions to embed, each quoted or faithfully reworded, in this order:")
            lines += [f"  {i + 1}. {q}" for i, q in enumerate(plan.questions)]
        if plan.operator == "switch":
            lines.append(
                "switch on question 1: one clause per option, in this order: "
                + ", ".join(plan.operands)
                + "; each option gets its own visible edit"
            )
        for condition in plan.conditions:
            if condition.operator == "switch":
                continue
            where = {"top": "condition", "join": f"joined with '{plan.join}' to the condition"}.get(
                condition.place, f"nested condition inside the {condition.place} branch"
            )
            lines.append(f"{where}: {condition_brief(condition)}")
        if parameter is not None and parameter.formula == "answer":
            lines.append(
                f"the edit on path {parameter.path!r} uses the answer to question {parameter.question + 1} (that "
                "colour, shape, number or word) without stating it"
            )
        elif parameter is not None:
            lines.append(
                f"the edit on path {parameter.path!r}: {PARAMETER_WORDS[parameter.formula]} the answer to question "
                f"{parameter.question + 1} (at most 6 new objects; say it through the question, never as a number)"
            )
        lines.append(
            "branches: one {path, edit} per path, exactly these paths: "
            + ", ".join(leaf.path for leaf in plan.leaves)
            + " (then = the condition holds, else = it does not, a/b = path b inside branch a, case:X = the "
            "option X); every edit a different visible change, never 'leave it unchanged'"
        )
        return "\n".join(lines)
    if plan.style == "conditional":
        if plan.candidate is None:
            candidate = (
                "none given: propose one in the `candidate` field, a plausible value of the same kind as the "
                "reference answer that is NOT the reference answer, and test it in the condition"
            )
        else:
            candidate = f"{plan.candidate!r} (the condition tests whether the answer is this value)"
        return (
            "style: conditional\n"
            f"candidate: {candidate}\n"
            "then_edit: a visible edit carried out when the answer is the candidate\n"
            "else_edit: a different visible edit carried out otherwise (never 'leave it unchanged')"
        )
    extra = ""
    if len(plan.questions) > 1:
        extra += "\nquestions to embed, each quoted or faithfully reworded, in this order:"
        extra += "".join(f"\n  {i + 1}. {q}" for i, q in enumerate(plan.questions))
    if parameter is not None:
        whose = f"question {parameter.question + 1}" if parameter.question else "the question"
        extra += (
            f"\namount: {PARAMETER_WORDS[parameter.formula]} the answer to {whose} (at most 6 new objects; say it "
            "through the question, never as a number)"
        )
    return f"style: {plan.style}\nthen_edit: null\nelse_edit: null{extra}"


def reply_leaves(plan: InstructionPlan, reply: RewriteReply) -> dict[str, str]:
    """The reply's branch tree as {path: edit}: for a plan with a tree its `branches`, for a plain if/else its
    then_edit / else_edit (strict structured outputs make a model fill the other field with something)."""
    given = {b.path.strip(): (b.edit or "").strip() for b in reply.branches or [] if b.path.strip()}
    pairs = (("then", (reply.then_edit or "").strip()), ("else", (reply.else_edit or "").strip()))
    slots = {path: edit for path, edit in pairs if edit}
    if _uses_tree(plan):  # the tree is the reply's word; a plain if/else is its two slots
        return given or slots
    return slots or given


def check_tree(plan: InstructionPlan, reply: RewriteReply) -> str | None:
    """A branch tree against the plan: exactly the plan's paths, each a visible edit, all different, and
    every operand of every condition named in the instruction."""
    leaves = reply_leaves(plan, reply)
    wanted = [leaf.path for leaf in plan.leaves]
    if sorted(leaves) != sorted(wanted):
        return (
            f"branch tree: the reply's branches {sorted(leaves)} contradict the plan's paths {wanted}; give one "
            "edit for each of the plan's paths and no other"
        )
    for path, edit in leaves.items():
        if is_no_op(edit):
            return f"visible edit: the edit on path {path!r} ({edit!r}) names no visible change"
    paths = sorted(leaves)
    for i, first in enumerate(paths):
        for second in paths[i + 1 :]:
            a, b = leaves[first], leaves[second]
            if normalise_text(a) == normalise_text(b) or same_edit(a, b):
                return f"distinct branches: the edits on paths {first!r} and {second!r} are the same edit"
    for condition in plan.conditions:
        for operand in condition.operands:
            named = (
                operand in reply.instruction.lower()
                if operand in ("even", "odd")
                else mentions_answer(reply.instruction, operand)
            )
            if not named:
                return f"operands: the instruction's conditions must name {operand!r} ({condition_brief(condition)})"
    return tree_sides_swapped(plan, reply.instruction, leaves)


def tree_sides_swapped(plan: InstructionPlan, instruction: str, leaves: dict[str, str]) -> str | None:
    """The top condition's two sides against the instruction's own clauses (method/branches.py): the edits
    of the paths under `then` must sit in the clauses that run when it holds, those under `else` in the
    others. Only an outright swap is reported: a wording the clause grammar cannot read passes (the judge,
    told the expected path, stays the check of those). Switches and joined conditions are not read."""
    top = next((c for c in plan.conditions if c.place == "top"), None)
    if top is None or plan.join is not None or top.operator in ("switch", "statement"):
        return None
    nested = {normalise_text(o) for c in plan.conditions if c.place != "top" for o in c.operands}
    # the clause grammar finds the main condition by a word of it that no nested condition also names
    candidate = next((o for o in top.operands if normalise_text(o) not in nested), None)
    if candidate is None:
        return None
    sides = {
        side: " and ".join(e for p, e in sorted(leaves.items()) if p.split("/")[0] == side)
        for side in ("then", "else")
    }
    holds, fails = sides["then"], sides["else"]
    if top.operator == "ne":  # "is not X" reads as the negative side of a test on X
        holds, fails = fails, holds
    mismatch = branch_mismatch(instruction, holds, fails, candidate, plan.closing)
    if mismatch and "swapped" in mismatch:
        return (
            f"branches match the text: the edits under 'then' and 'else' are {mismatch.split(' are ', 1)[1]}"
        )
    return None


def check_reply(plan: InstructionPlan, reply: RewriteReply, answer: str, process_answer: str) -> str | None:
    """Which plan rule the reply breaks ('rule: detail'), else None. Leaks are checked separately."""
    if not plan.conditional:
        return None
    if _uses_tree(plan):
        return check_tree(plan, reply)
    then_edit, else_edit = (reply.then_edit or "").strip(), (reply.else_edit or "").strip()
    if not then_edit or not else_edit:
        return "both branches: then_edit and else_edit must both be given for a conditional plan"
    for name, edit in (("then_edit", then_edit), ("else_edit", else_edit)):
        if is_no_op(edit):
            return (
                f"visible edit: {name} {edit!r} names no visible action on something in the scene; both "
                "branches must change the image"
            )
    if normalise_text(then_edit) == normalise_text(else_edit) or same_edit(then_edit, else_edit):
        return (
            "distinct branches: then_edit and else_edit are the same edit (same action, object and attribute "
            "in other words); the two branches must do visibly different things"
        )
    candidate = plan.candidate if plan.candidate is not None else (reply.candidate or "").strip()
    if not candidate:
        return "candidate: the plan asked for a candidate in the `candidate` field and none was given"
    if plan.candidate is None and any(same_answer(candidate, a) for a in (answer, process_answer) if a):
        return f"candidate: the proposed candidate {candidate!r} is the answer; it must be a different value"
    if not candidate_in_condition(reply.instruction, candidate):
        return (
            f"candidate in condition: the condition of the instruction must test the candidate {candidate!r}"
        )
    return check_clauses(reply.instruction, then_edit, else_edit, candidate, plan.closing)


def check_clauses(
    instruction: str, then_edit: str, else_edit: str, candidate: str, closing: str | None
) -> str | None:
    """The instruction's own clauses (method/branches.py): then_edit in the clause that runs when the
    condition holds, else_edit in the other, and both clauses visible, different edits."""
    mismatch = branch_mismatch(instruction, then_edit, else_edit, candidate, closing)
    if mismatch:
        return f"branches match the text: {mismatch}"
    branches = read_branches(instruction, candidate, closing)
    for name, text in (("holds", branches.then_text), ("does not hold", branches.else_text)):
        if is_no_op(text):
            return f"visible edit: the clause that runs when the condition {name} ({text!r}) changes nothing"
    if same_edit(branches.then_text, branches.else_text):
        return "distinct branches: the instruction's two clauses are the same edit in other words"
    return None


class RewriteStage:
    name = "rewrite"

    def __init__(self, ctx: StageContext):
        self.ctx = ctx
        self.spec = ctx.config.stages.rewrite
        # a fixed closing sentence: the pipeline's directive, or the release's under the release judge preset;
        # None: each record's plan draws a preservation clause ("change nothing else", worded variously)
        release = ctx.config.stages.judge.preset == "release"
        self.fixed_closing = self.spec.aesthetics_directive or (RELEASE_CLOSING if release else None)
        logic = self.spec.logic
        self.logic = LogicSettings(
            tuple(logic.operators), logic.nest_p, logic.join_p, logic.parameter_p, logic.count_arithmetic
        )
        #: category -> (its prompt, with its exemplar pool's field; the pool)
        self._templates: dict[str, tuple[Prompt, ExamplePool | None]] = {}

    def prompt_for(self, category: str) -> Prompt:
        template = self.spec.prompt or "rewrite/{category}.txt"
        relative = template.format(category=category)
        if not (self.ctx.prompts_dir / relative).is_file():
            relative = template.format(category="generic")
        return self.ctx.prompt(relative)

    def pool_for(self, category: str) -> ExamplePool | None:
        """The category's exemplar pool (`stages.rewrite.examples`; `generic` for a category without one)."""
        template = self.spec.examples
        if not template or not self.spec.examples_per_record:
            return None
        # an own prompts_dir without pools gets the shipped ones; a pool the pipeline names must be there
        folders = (self.ctx.prompts_dir, *((bundled_prompts(),) if template == DEFAULT_EXAMPLES else ()))
        for folder in folders:
            for name in (category, "generic"):
                if (folder / template.format(category=name)).is_file():
                    return load_examples(folder, template.format(category=name))
        return load_examples(self.ctx.prompts_dir, template.format(category=category))  # says what is missing

    def prompt_and_examples(self, item: WorkItem, category: str) -> tuple[Prompt, str]:
        """The rewrite prompt and this record's worked examples (seeded by seed + record id)."""
        found = self._templates.get(category)
        if found is None:  # once per category and worker: a few stats and a hash, every record otherwise
            prompt, pool = self.prompt_for(category), self.pool_for(category)
            found = self._templates[category] = (prompt if pool is None else with_examples(prompt, pool), pool)
        prompt, pool = found
        if pool is None:
            return prompt, ""
        drawn = pool.draw(self.ctx.config.seed, item.record.id, self.spec.examples_per_record)
        return prompt, "\n\n".join(format_example(e) for e in drawn)

    def plan_for(self, item: WorkItem) -> InstructionPlan:
        record = item.record
        space = record.meta.get("answer_space") if isinstance(record.meta, dict) else None
        return draw_plan(
            self.ctx.config.seed,
            record.id,
            item.task_category or "others",
            record.answer,
            self.spec.styles,
            self.spec.candidate_is_answer_p,
            [str(v) for v in space] if isinstance(space, list) else None,
            closing=self.fixed_closing,
            question=record.question,
            siblings=record.siblings,
            logic_settings=self.logic,
        )

    async def _ask(self, item: WorkItem, plan: InstructionPlan, repair: str = "") -> RewriteReply:
        same_call = self.spec.reasoning == "rewrite_call"
        record = item.record
        category = item.task_category or "others"
        prompt, examples = self.prompt_and_examples(item, category)
        return await self.ctx.ask(
            self.name,
            item,
            prompt,
            {
                "examples": examples,
                "question": record.question,
                "answer": record.answer,
                "process_answer": item.process_answer or "",
                "category": category,
                "aesthetics": plan.closing or "",
                "plan": plan_brief(plan),
            },
            reply_model=RewriteReply,
            schema=REWRITE_WITH_REASONING_SCHEMA if same_call else REWRITE_SCHEMA,
            schema_name="edit_instruction",
            context={
                "question": record.question,
                "answer": record.answer,
                "process_answer": item.process_answer,
                "task_category": category,
                "meta": record.meta,
                "aesthetics": plan.closing,
                "plan": plan.model_dump(mode="json"),
                **({"siblings": [s.model_dump(mode="json") for s in record.siblings]} if record.siblings else {}),
                **({"repair": repair} if repair else {}),
                **({"reasoning_requested": True} if same_call else {}),
            },
            failure=RejectReason.rewrite_failed,
            # grounding: branch edits can name objects that are in the picture (`with_image`)
            images=[item.image] if self.spec.with_image and item.image else None,
            repair="\n".join(part for part in (REASONING_IN_REWRITE_REQUEST if same_call else "", repair) if part),
        )

    def _leak_check(self, item: WorkItem, plan: InstructionPlan, instruction: str) -> None:
        if not self.spec.leak_check:
            return
        # every embedded question's answer, each allowed only in its own condition (method/logic.py)
        leaked = plan_leak(instruction, plan, item.record.answer, item.process_answer, item.record.question)
        if leaked:
            where = " outside the condition" if plan.candidate_is_answer else ""
            raise Rejected(RejectReason.leaks_answer, f"instruction contains the answer {leaked!r}{where}")

    async def __call__(self, item: WorkItem) -> WorkItem:
        """Leaks are rejected at once (`leaks_answer`); a broken plan rule gets one repair request, then the
        record is a `rewrite_failed` reject whose detail names the rule."""
        record = item.record
        plan = self.plan_for(item)
        item.plan = plan
        answers = (record.answer, item.process_answer or "")
        parsed = await self._ask(item, plan)
        self._take(item, plan, parsed)
        broken = check_reply(plan, parsed, *answers)
        if broken:
            previous = json.dumps(parsed.model_dump(exclude={"edit_program"}), ensure_ascii=False)
            note = (
                f"Your previous reply broke a rule of the plan ({broken}). Previous reply: {previous}\n"
                "Reply again with a corrected JSON object that follows the plan and every rule."
            )
            parsed = await self._ask(item, plan, repair=note)
            self._take(item, plan, parsed)
            broken = check_reply(plan, parsed, *answers)
            if broken:
                raise Rejected(RejectReason.rewrite_failed, f"rewrite: {broken} (after one repair request)")
        await self._reason(item, parsed)
        return item

    async def _reason(self, item: WorkItem, parsed: RewriteReply) -> None:
        """The `reasoning` and `intended_effect` columns. A model-phrased trace that contradicts the plan is
        replaced by the template (which cannot), so every row's trace passes `check_trace`."""
        mode = self.spec.reasoning
        if mode == "off":
            return
        plan, record = item.plan, item.record
        branch_edit = parsed.then_edit if plan is not None and not plan.conditional else None
        closing = plan.closing if plan is not None else None
        effect = intended_effect(plan, _without_directive(item.instruction or "", closing or ""), branch_edit)
        item.intended_effect = effect
        answer = record.answer or item.process_answer or ""
        trace = template_trace(record.question, answer, plan, effect)
        phrased = None
        if mode == "model":
            phrased = await self._phrase(item, answer, effect, trace)
        elif mode == "rewrite_call":
            phrased = (parsed.reasoning or "").strip() or None
        if mode != "template":
            if phrased is not None and check_trace(phrased, plan, answer, effect) is None:
                trace = phrased
        broken = check_trace(trace, plan, answer, effect)
        if broken:  # the template follows the plan by construction: a checker gap, not the record's fault
            log.warning("record %s: the reasoning check flags the template trace (%s)", record.id, broken)
        item.reasoning = trace

    async def _phrase(self, item: WorkItem, answer: str, effect: str | None, template: str) -> str | None:
        plan = item.plan
        try:
            reply = await self.ctx.ask(
                self.name,
                item,
                self.ctx.prompt(self.spec.reasoning_prompt),
                {
                    "question": item.record.question,
                    "answer": answer,
                    "instruction": item.instruction or "",
                    "plan": plan_brief(plan) if plan else "",
                    "edit": effect or "",
                },
                reply_model=ReasoningReply,
                schema=REASONING_SCHEMA,
                schema_name="reasoning_trace",
                context={
                    "question": item.record.question,
                    "answer": answer,
                    "plan": plan.model_dump(mode="json") if plan else None,
                    "intended_effect": effect,
                    "template": template,
                },
                task="reason",
            )
        except Rejected:  # a failed follow-up costs the record nothing: the template stands in
            return None
        return reply.reasoning.strip()

    def _take(self, item: WorkItem, plan: InstructionPlan, parsed: RewriteReply) -> None:
        """Keep a reply on the item (instruction, program, the plan's branch edits), then leak-check it."""
        item.instruction = parsed.instruction.strip()
        item.edit_program = parsed.edit_program
        if plan.conditional:
            item.plan = plan.model_copy(
                update={
                    "candidate": plan.candidate
                    if plan.candidate is not None
                    else (parsed.candidate or "").strip() or None,
                    "then_edit": (parsed.then_edit or "").strip() or None,
                    "else_edit": (parsed.else_edit or "").strip() or None,
                    "leaves": _filled(plan, parsed),
                    **_with_proposed(plan, parsed),
                }
            )
        self._leak_check(item, plan, item.instruction)


def _filled(plan: InstructionPlan, parsed: RewriteReply) -> list[PlanLeaf]:
    """The plan's leaves with the reply's edits (paths the reply left out stay empty)."""
    edits = reply_leaves(plan, parsed)
    return [leaf.model_copy(update={"edit": edits.get(leaf.path) or None}) for leaf in plan.leaves]


def _with_proposed(plan: InstructionPlan, parsed: RewriteReply) -> dict:
    """A candidate the rewriter proposed becomes the eq condition's operand."""
    proposed = (parsed.candidate or "").strip()
    if plan.candidate is not None or not proposed or plan.operator != "eq" or plan.operands:
        return {}
    conditions = [
        c.model_copy(update={"operands": [proposed]}) if c.place == "top" else c for c in plan.conditions
    ]
    return {"operands": [proposed], "conditions": conditions}
