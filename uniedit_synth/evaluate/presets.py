"""Each benchmark's own judge protocol as a preset: which prompts it sends with which images, what scores it
reads back, how a sample's figures follow from them, and how the benchmark aggregates them into its headline.

Prompt texts are the benchmarks' own, byte for byte, under `prompts/eval/<benchmark>/`, filled the way the
benchmark's script fills them (`str.format` or `str.replace`). Where we depart from the script, the preset says
so in `differs` (printed by `uniedit eval` and written to eval.json); `reproduced` lists what is the same.
Sources (read from the public repositories; commit in `source`):
  GEdit-Bench  stepfun-ai/Step1X-Edit  GEdit-Bench/viescore/__init__.py, vie_prompts.py, calculate_statistics.py
  KRIS-Bench   mercurystraw/Kris_Bench metrics_common.py, metrics_knowledge.py (prompts from its utils/prompts.py)
  RISEBench    PhoenixZ810/RISEBench   gpt_eval.py (eval_vanilla, extract, calculate_score, calculate_completion),
               utils.py (prompts)
  ImgEdit      PKU-YuanGroup/ImgEdit   Benchmark/Basic/basic_bench.py, prompts.json, step1_get_avgscore.py,
               step2_typescore.py
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from ..core.bundled import prompts_dir
from ..core.errors import UniEditError
from .items import EvalItem


@dataclass
class JudgeCall:
    """One judge request of a protocol: the filled prompt, its images (in order) and the reply's score fields."""

    name: str
    prompt_file: str
    prompt: str
    images: list[bytes]
    scores: dict[str, tuple[int, int]]  # reply field -> (min, max)
    reason_field: str = "reasoning"
    params: dict[str, Any] = field(default_factory=dict)

    def schema(self) -> dict[str, Any]:
        """Structured output in place of the benchmark's regex over free text (a listed difference)."""
        props: dict[str, Any] = {self.reason_field: {"type": "string"}}
        for name, (low, high) in self.scores.items():
            props[name] = ({"type": "array", "items": {"type": "integer", "minimum": low, "maximum": high}}
                           if name == "score" else {"type": "integer", "minimum": low, "maximum": high})
        return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


class JudgeReplyError(ValueError):
    """A reply without the scores the protocol reads: the sample is `judge_failed`, as upstream drops it."""


@cache
def prompt_text(relative: str) -> str:
    path = prompts_dir() / "eval" / relative
    if not path.is_file():
        raise UniEditError(f"eval prompt {path} is missing: reinstall uniedit-synth (prompts/eval ships with it)")
    return path.read_text(encoding="utf-8")


def _score(reply: dict[str, Any], name: str, scale: tuple[int, int]) -> int:
    value = reply.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not scale[0] <= value <= scale[1]:
        raise JudgeReplyError(f"reply field {name!r} is {value!r}, not a score in {scale[0]}..{scale[1]}")
    return int(value)


def mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


class Protocol:
    name = ""
    title = ""
    source = ""  # repository@commit and files
    judge_model = ""  # what the benchmark's script calls
    axes: tuple[str, ...] = ()
    reproduced: tuple[str, ...] = ()
    differs: tuple[str, ...] = ()

    def calls(self, item: EvalItem, edited: bytes) -> list[JudgeCall]:
        raise NotImplementedError

    def figures(self, item: EvalItem, replies: dict[str, dict[str, Any]]) -> dict[str, float]:
        """A sample's figures (axes and derived numbers) from its replies, keyed by call name."""
        raise NotImplementedError

    def headline(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """The benchmark's own summary from per-sample rows ({key, category, extra, figures|None})."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"preset": self.name, "title": self.title, "source": self.source, "judge_model": self.judge_model,
                "axes": list(self.axes), "reproduced": list(self.reproduced), "differs": list(self.differs)}


def _judged(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if row.get("figures")]


def category_means(rows: list[dict[str, Any]], names: tuple[str, ...]) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for category in sorted({row["category"] for row in rows}):
        judged = [r for r in _judged(rows) if r["category"] == category]
        out[category] = {n: mean([r["figures"][n] for r in judged if r["figures"].get(n) is not None])
                         for n in names}
    return out


# ------------------------------------------------------------------------------------------------ GEdit-Bench
class GEditBench(Protocol):
    name = "gedit-bench"
    title = "GEdit-Bench (VIEScore: semantic consistency, perceptual quality, overall)"
    source = ("stepfun-ai/Step1X-Edit@570eba6 GEdit-Bench/viescore/__init__.py, viescore/vie_prompts.py, "
              "GEdit-Bench/calculate_statistics.py")
    judge_model = "gpt-4.1 (EVAL.md; the script's backbone flag says gpt4o)"
    axes = ("semantic_consistency", "perceptual_quality", "overall")
    reproduced = (
        "SC prompt = _context_no_delimit + _prompts_0shot_two_image_edit_rule + _prompts_0shot_tie_rule_SC with "
        "<instruction> replaced; images source then edit",
        "PQ prompt = _context_no_delimit + _prompts_0shot_rule_PQ with the edited image only",
        "SC = min(score list), PQ = min(score list), overall = sqrt(SC * PQ) per sample (0-10)",
        "per task type mean, then the mean over task types, per instruction language, full set and the "
        "Intersection_exist subset",
    )
    differs = (
        "scores are requested as structured JSON output ({score: [..], reasoning}) instead of parsed from "
        "free text (the prompt already asks for that JSON)",
        "upstream resizes the edit to the source's size before judging; the edit is sent as the editor returned it",
        "the mean over task types is over the types present (upstream: its 11 fixed GROUPS)",
    )

    def calls(self, item: EvalItem, edited: bytes) -> list[JudgeCall]:
        sc = prompt_text("gedit-bench/semantic_consistency.txt").replace("<instruction>", item.instruction)
        pq = prompt_text("gedit-bench/perceptual_quality.txt")
        return [JudgeCall("SC", "gedit-bench/semantic_consistency.txt", sc, [item.source, edited],
                          {"score": (0, 10)}),
                JudgeCall("PQ", "gedit-bench/perceptual_quality.txt", pq, [edited], {"score": (0, 10)})]

    def figures(self, item: EvalItem, replies: dict[str, dict[str, Any]]) -> dict[str, float]:
        out = {}
        for call, axis in (("SC", "semantic_consistency"), ("PQ", "perceptual_quality")):
            scores = replies[call].get("score")
            if not isinstance(scores, list) or not scores or not all(
                    isinstance(s, (int, float)) and not isinstance(s, bool) and 0 <= s <= 10 for s in scores):
                raise JudgeReplyError(f"{call} reply score is {scores!r}, not a list of 0-10 scores")
            out[axis] = float(min(scores))
        out["overall"] = math.sqrt(out["semantic_consistency"] * out["perceptual_quality"])
        return out

    def headline(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for language in sorted({r["extra"].get("language", "en") for r in rows}):
            for subset in ("fullset", "intersection"):
                chosen = [r for r in rows if r["extra"].get("language", "en") == language
                          and (subset == "fullset" or r["extra"].get("intersection"))]
                groups = category_means(chosen, self.axes)
                out[f"{language}_{subset}"] = {
                    axis: mean([g[axis] for g in groups.values() if g[axis] is not None]) for axis in self.axes
                } | {"per_task_type": groups}
        first = "en_fullset" if "en_fullset" in out else next(iter(out), None)
        value = out[first]["overall"] if first else None
        return {"name": f"GEdit-Bench {first} overall (0-10, mean over task types)", "value": value, **out}


# ------------------------------------------------------------------------------------------------ KRIS-Bench
KRIS_KNOWLEDGE = ("abstract_reasoning", "mathematics", "daily_life", "medicine", "rule_reasoning", "biology",
                  "geography", "chemistry", "humanities", "physics")
KRIS_SPECIAL = ("viewpoint_change", "multi-element_composition", "temporal_prediction")


class KrisBench(Protocol):
    name = "kris-bench"
    title = "KRIS-Bench (visual consistency, visual quality, instruction following, knowledge plausibility)"
    source = ("mercurystraw/Kris_Bench@2114fec metrics_common.py, metrics_knowledge.py; prompt texts of its "
              "utils/prompts.py (prompt_consist, prompt_quality, prompt_instruction_following, "
              "prompt_dual_evaluation)")
    judge_model = "gpt-4o"
    axes = ("visual_consistency", "visual_quality", "instruction_following", "knowledge_plausibility")
    reproduced = (
        "consistency: prompt_consist.format(instruct=…) with the original then the edited image (1-5)",
        "quality: prompt_quality (sent unformatted, as upstream) with the edited image only (1-5)",
        "instruction following: prompt_instruction_following (metrics_common.py categories; its "
        "'abnormality_correction' test never matches the 'anomaly_correction' folder, so that category uses it too)",
        "knowledge categories (metrics_knowledge.py): prompt_dual_evaluation.format(instruct, explanation) → "
        "instruction and knowledge scores (1-5)",
    )
    differs = (
        "scores are requested as structured JSON output instead of extracted with the scripts' regexes",
        "upstream interleaves 'This is the original image:' / 'This is the edited image:' text parts; here the "
        "images follow the prompt in that order without those two captions",
        "viewpoint_change, multi-element_composition and temporal_prediction use their ground-truth / multi-image "
        "prompts upstream (metrics_view_change.py, …); here they are judged with the common prompts",
        "the repository ships no aggregation script: the headline is the mean of the per-axis means (1-5), "
        "not the paper's normalised score",
    )

    def calls(self, item: EvalItem, edited: bytes) -> list[JudgeCall]:
        both = [item.source, edited]
        calls = [JudgeCall("consistency", "kris-bench/consist.txt",
                           prompt_text("kris-bench/consist.txt").format(instruct=item.instruction), both,
                           {"consistency_score": (1, 5)}),
                 JudgeCall("quality", "kris-bench/quality.txt", prompt_text("kris-bench/quality.txt"),
                           [edited], {"quality_score": (1, 5)})]
        if item.category in KRIS_KNOWLEDGE:
            text = prompt_text("kris-bench/dual_evaluation.txt").format(
                instruct=item.instruction, explanation=item.extra.get("explain", ""))
            calls.append(JudgeCall("dual", "kris-bench/dual_evaluation.txt", text, both,
                                   {"instruction_score": (1, 5), "knowledge_score": (1, 5)},
                                   reason_field="knowledge_reasoning"))
        else:
            text = prompt_text("kris-bench/instruction_following.txt").format(instruct=item.instruction)
            calls.append(JudgeCall("instruction", "kris-bench/instruction_following.txt", text, both,
                                   {"instruction_score": (1, 5)}))
        return calls

    def figures(self, item: EvalItem, replies: dict[str, dict[str, Any]]) -> dict[str, float]:
        out = {"visual_consistency": _score(replies["consistency"], "consistency_score", (1, 5)),
               "visual_quality": _score(replies["quality"], "quality_score", (1, 5))}
        if "dual" in replies:
            out["instruction_following"] = _score(replies["dual"], "instruction_score", (1, 5))
            out["knowledge_plausibility"] = _score(replies["dual"], "knowledge_score", (1, 5))
        else:
            out["instruction_following"] = _score(replies["instruction"], "instruction_score", (1, 5))
        return {k: float(v) for k, v in out.items()}

    def headline(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        judged = _judged(rows)
        axes = {a: mean([r["figures"][a] for r in judged if a in r["figures"]]) for a in self.axes}
        present = [v for v in axes.values() if v is not None]
        return {"name": "KRIS-Bench mean of the per-axis means (1-5)", "value": mean(present), "axes": axes,
                "per_category": category_means(rows, self.axes)}


# ------------------------------------------------------------------------------------------------ RISEBench
class RiseBench(Protocol):
    name = "risebench"
    title = "RISEBench (instruction reasoning, appearance consistency, visual plausibility; accuracy)"
    source = "PhoenixZ810/RISEBench@5f22651 gpt_eval.py (eval_vanilla, calculate_score, calculate_completion), utils.py"
    judge_model = "gpt-4.1-2025-04-14 (temperature 0)"
    axes = ("instruction_reasoning", "appearance_consistency", "visual_plausibility")
    reproduced = (
        "per category the prompts and image pairs of eval_vanilla (temporal/causal: consist, reasoning"
        "[_w_input], generation; spatial: spatial_cons, spatial_ref[_img|_w_input], spatial_qual; logical: "
        "logical_cons[_ans], logical_txt|logical_img[_wo_q]), filled with str.format; consistency_free skips consistency",
        "logical 0/1 scores map to 4*min(s,1)+1",
        "score = 0.3*consistency + 0.5*reasoning + 0.2*plausibility (0.2/0.8 without consistency; logical "
        "0.3/0.7), halved (not below 1) when reasoning is 1",
        "accuracy: a sample counts only when every judged dimension is 5 (a sample not judged counts 0); "
        "score percentage = 25*(score-1)",
    )
    differs = (
        "the 'Final Score' is requested as a structured JSON field instead of parsed from free text",
        "upstream resizes images to 768 px (prepare_inputs image_size) before sending; sent at their own size here",
    )

    def _call(self, name: str, file: str, item: EvalItem, images: list[bytes], scale: tuple[int, int],
              **fields: str) -> JudgeCall:
        text = prompt_text(f"risebench/{file}.txt")
        if name != "quality":  # eval_vanilla sends the quality prompts unformatted
            text = text.format(instruct=item.instruction, **fields)
        return JudgeCall(name, f"risebench/{file}.txt", text, images, {"final_score": scale},
                         reason_field="explanation", params={"temperature": 0})

    def calls(self, item: EvalItem, edited: bytes) -> list[JudgeCall]:
        x, cat, ref = item.extra, item.category, item.extra.get("reference", "")
        calls: list[JudgeCall] = []
        first = item.source
        if cat in ("temporal_reasoning", "causal_reasoning"):
            cons = ("consist", (1, 5), {})
            rea = (self._call("reasoning", "reasoning_w_input", item, [first, edited], (1, 5), reference=ref)
                   if x.get("reasoning_img") else self._call("reasoning", "reasoning", item, [edited], (1, 5),
                                                             reference=ref))
            quality = "generation"
        elif cat == "spatial_reasoning":
            if item.reference_image is not None:
                first = item.reference_image
                rea = self._call("reasoning", "spatial_ref_img", item, [first, edited], (1, 5))
            elif x.get("reasoning_img"):
                rea = self._call("reasoning", "spatial_ref_w_input", item, [first, edited], (1, 5), reference=ref)
            else:
                rea = self._call("reasoning", "spatial_ref", item, [edited], (1, 5), reference=ref)
            cons, quality = ("spatial_cons", (1, 5), {}), "spatial_qual"
        elif cat == "logical_reasoning":
            quality = None
            if x.get("reference_txt"):
                cons = ("logical_cons_ans", (0, 1), {"reference": x["reference_txt"]})
                rea = self._call("reasoning", "logical_txt", item, [edited], (0, 1), reference=x["reference_txt"])
            elif item.reference_image is not None:
                first = item.reference_image
                cons = ("logical_cons", (0, 1), {})
                rea = self._call("reasoning", "logical_img_wo_q" if x.get("reasoning_wo_ins") else "logical_img",
                                 item, [first, edited], (0, 1))
            else:
                raise JudgeReplyError("a logical_reasoning item without reference_txt or reference_img")
        else:
            raise JudgeReplyError(f"RISEBench has no protocol for category {cat!r}")
        if not x.get("consistency_free"):
            calls.append(self._call("consistency", cons[0], item, [first, edited], cons[1], **cons[2]))
        calls.append(rea)
        if quality:
            calls.append(self._call("quality", quality, item, [edited], (1, 5)))
        return calls

    def figures(self, item: EvalItem, replies: dict[str, dict[str, Any]]) -> dict[str, float]:
        logical = item.category == "logical_reasoning"
        scale = (0, 1) if logical else (1, 5)

        def get(call: str) -> float | None:
            if call not in replies:
                return None
            value = _score(replies[call], "final_score", scale if call != "quality" else (1, 5))
            return float(4 * min(value, 1) + 1) if logical else float(value)

        c, r, v = get("consistency"), get("reasoning"), get("quality")
        if logical:
            score = 0.3 * c + 0.7 * r
            complete = c == 5 and r == 5
        elif c is None:  # consistency_free
            score = 0.2 * v + 0.8 * r
            complete = r == 5 and v == 5
        else:
            score = 0.3 * c + 0.5 * r + 0.2 * v
            complete = c == 5 and r == 5 and v == 5
        if r == 1:
            score = max(1.0, score * 0.5)
        out = {"instruction_reasoning": r, "appearance_consistency": c, "visual_plausibility": v,
               "score": score, "accuracy": float(complete)}
        return {k: val for k, val in out.items() if val is not None}

    def headline(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        def block(chosen: list[dict[str, Any]]) -> dict[str, Any]:
            judged = _judged(chosen)
            score = mean([r["figures"]["score"] for r in judged])
            figures = {a: mean([r["figures"][a] for r in judged if a in r["figures"]]) for a in self.axes}
            return {"accuracy": mean([r["figures"]["accuracy"] if r.get("figures") else 0.0 for r in chosen]),
                    "score": score, "score_percentage": None if score is None else 25 * (score - 1), **figures}

        overall = block(rows)
        per = {c: block([r for r in rows if r["category"] == c]) for c in sorted({r["category"] for r in rows})}
        subtasks = sorted({r["extra"].get("subtask") for r in rows} - {None})
        return {"name": "RISEBench accuracy (share of samples with full marks on every dimension)",
                "value": overall["accuracy"], "overall": overall, "per_category": per,
                "per_subtask": {s: block([r for r in rows if r["extra"].get("subtask") == s]) for s in subtasks}}


# ------------------------------------------------------------------------------------------------ ImgEdit
_CRITERION = re.compile(r"^([A-Z][^:\n]{2,60}): A number from 1 to 5\.", re.MULTILINE)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


class ImgEditBench(Protocol):
    name = "imgedit-bench"
    title = "ImgEdit-Bench basic (three 1-5 scores per edit type, their average)"
    source = ("PKU-YuanGroup/ImgEdit@547185d Benchmark/Basic/basic_bench.py, prompts.json, step1_get_avgscore.py, "
              "step2_typescore.py")
    judge_model = "gpt-4o (basic_bench.py; the paper reports GPT-4.1)"
    axes = ("criterion_1", "criterion_2", "criterion_3")
    reproduced = (
        "the edit type's prompt from prompts.json with <edit_prompt> replaced; images source then edit",
        "a sample's score = round(mean of its three 1-5 scores, 2) (step1_get_avgscore.py)",
        "per edit type: round(mean of the sample scores, 2) (step2_typescore.py)",
    )
    differs = (
        "the three scores are requested as structured JSON fields (named as the prompt names them) instead of "
        "parsed from 'Name: n' lines",
        "the headline overall is the mean of the per-type averages; upstream's scripts stop at per-type averages",
    )

    @staticmethod
    def criteria(edit_type: str) -> list[str]:
        text = prompt_text(f"imgedit-bench/{edit_type}.txt")
        block = text.split("Example Response Format:", 1)[-1]
        return _CRITERION.findall(block)[:3]

    def calls(self, item: EvalItem, edited: bytes) -> list[JudgeCall]:
        file = f"imgedit-bench/{item.category}.txt"
        if not (prompts_dir() / "eval" / file).is_file():
            raise JudgeReplyError(f"ImgEdit has no prompt for edit type {item.category!r}")
        names = self.criteria(item.category)
        return [JudgeCall("score", file, prompt_text(file).replace("<edit_prompt>", item.instruction),
                          [item.source, edited], {slug(n): (1, 5) for n in names},
                          reason_field="brief_reasoning")]

    def figures(self, item: EvalItem, replies: dict[str, dict[str, Any]]) -> dict[str, float]:
        names = self.criteria(item.category)
        values = [_score(replies["score"], slug(n), (1, 5)) for n in names]
        out = {f"criterion_{n + 1}": float(v) for n, v in enumerate(values)}
        out["score"] = round(sum(values) / len(values), 2)
        return out

    def headline(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        judged = _judged(rows)
        per_type = {t: round(statistics.fmean(r["figures"]["score"] for r in judged if r["category"] == t), 2)
                    for t in sorted({r["category"] for r in judged})}
        criteria = {t: self.criteria(t) for t in per_type}
        return {"name": "ImgEdit-Bench overall (mean of the per-type averages, 1-5)",
                "value": mean(list(per_type.values())), "per_type": per_type, "criteria": criteria}


PROTOCOLS: dict[str, type[Protocol]] = {p.name: p for p in (GEditBench, KrisBench, RiseBench, ImgEditBench)}


def protocol_for(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]()
    except KeyError:
        raise UniEditError(f"no judge preset {name!r}; presets: {', '.join(sorted(PROTOCOLS))}, pipeline") from None
