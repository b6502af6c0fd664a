"""Generic edit programs, for any image: the branch decided by the (known) answer, each branch a panel, swatch or
tint drawn into its own corner box, so a judge checks that pixels changed inside the right box only."""

from __future__ import annotations

import random
import re
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..method.answers import normalise_answer, same_answer
from ..method.logic import holds as logic_holds
from .program import PROGRAM_VERSION, ProgramError, decode_rgb
from .questions import (
    WARM_COLORS,
)
from .render import draw_text_centered, encode_png
from .world import COLORS

# ================================================================ generic programs (any image)

GENERIC_COLORS: dict[str, tuple[int, int, int]] = {**COLORS, "black": (20, 20, 20), "white": (245, 245, 245)}
CORNERS: dict[str, tuple[float, float, float, float]] = {  # box as fractions of width / height
    "top-left": (0.04, 0.04, 0.46, 0.26),
    "top-right": (0.54, 0.04, 0.96, 0.26),
    "bottom-left": (0.04, 0.74, 0.46, 0.96),
    "bottom-right": (0.54, 0.74, 0.96, 0.96),
}
PANEL_FILL = (250, 250, 250)
PANEL_BORDER = (15, 15, 15)
TINTS = {"blue": (40, 80, 210), "orange": (240, 130, 30), "green": (40, 160, 60), "purple": (130, 50, 170)}


def answer_kind(answer: str) -> str:
    """Which generic edit fits an answer: "number", "color", "yes_no" or "text"."""
    norm = normalise_answer(answer)
    if re.fullmatch(r"-?\d+", norm):
        return "number"
    if norm in GENERIC_COLORS:
        return "color"
    if norm in ("yes", "no"):
        return "yes_no"
    return "text"


def generic_program(
    question: str,
    answer: str,
    category: str,
    image_size: tuple[int, int] | int | None,
    rng: random.Random,
    plan: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A deterministic, visible edit for an image from outside the offline world, following the plan.

    Conditional: the branch is decided by whether the (known) answer is the plan's candidate; each branch
    edits a different corner box, so taking the wrong branch is visible. Other styles: one edit that shows
    the answer (the number or text on a panel, the colour as a swatch, a tint for yes / no). `image_size`
    is only recorded. The answer may be *drawn*, but the program is data: it is the instruction text that
    must never state the answer.
    """
    size = (
        [image_size, image_size] if isinstance(image_size, int) else list(image_size) if image_size else None
    )
    norm = normalise_answer(answer)
    kind = answer_kind(answer)
    style = (plan or {}).get("style") or "conditional"
    corner_true, corner_false = rng.sample(sorted(CORNERS), 2)
    shown = " ".join(answer.split())[:24]
    if kind == "number":
        actions = [{"op": "panel", "corner": c, "text": norm} for c in (corner_true, corner_false)]
    elif kind == "color":
        actions = [{"op": "swatch", "corner": c, "color": norm} for c in (corner_true, corner_false)]
    elif kind == "yes_no":
        first, second = rng.sample(sorted(TINTS), 2)
        actions = [{"op": "tint", "corner": corner_true, "color": first}]
        actions.append({"op": "tint", "corner": corner_false, "color": second})
    else:
        actions = [{"op": "panel", "corner": c, "text": shown} for c in (corner_true, corner_false)]
    conditions = (plan or {}).get("conditions") or []
    if style == "conditional" and conditions and (plan or {}).get("operator") != "eq":
        test = _plan_test(plan or {}, norm)
        if_false = actions[1]
    elif style == "conditional":
        candidate = (plan or {}).get("candidate")
        if not candidate:
            from ..method.plan import distractor

            candidate = distractor(answer, rng) or f"not {norm}"
        test: dict[str, Any] = {"op": "eq", "value": str(candidate)}
        if_false: dict[str, Any] | None = actions[1]
    else:
        test, if_false = {"op": "always"}, None
    return {
        "kind": "generic",
        "version": PROGRAM_VERSION,
        "category": category,
        "image_size": size,  # informational: boxes are fractions, applied to whatever size arrives
        "condition": {"answer": norm, "test": test},
        "if_true": actions[0],
        "if_false": if_false,
        **({"candidate": str(test["value"])} if test["op"] == "eq" and "value" in test else {}),
    }


def _plan_test(plan: dict[str, Any], answer: str) -> dict[str, Any]:
    """The plan's first level as a generic test: its top condition (and a joined one), each on its own
    answer. Generic mode shows the first level only (two corners); a nested level is resolved into the
    branch's edit, and a switch tests its first case against the rest."""
    answers = [answer, *(normalise_answer(str(a)) for a in (plan.get("answers") or [])[1:])]

    def one(condition: dict[str, Any]) -> dict[str, Any]:
        operator, operands = condition["operator"], [str(o) for o in condition.get("operands", [])]
        if operator == "switch":
            operator, operands = "eq", operands[:1]
        return {"op": operator, "operands": operands, "answer": answers[condition["question"]]}

    conditions = plan["conditions"]
    top = one(next(c for c in conditions if c["place"] == "top"))
    joined = next((c for c in conditions if c["place"] == "join"), None)
    return {"op": plan["join"], "tests": [top, one(joined)]} if joined else top


def _test_holds(test: dict[str, Any], answer: str) -> bool:
    op = test["op"]
    if op in ("and", "or"):
        results = [_test_holds(t, answer) for t in test["tests"]]
        return all(results) if op == "and" else any(results)
    if "operands" in test:
        return logic_holds(op, test["operands"], str(test.get("answer", answer)))
    return _legacy_holds(test, answer)


def generic_branch_taken(program: dict[str, Any]) -> bool:
    answer = str(program["condition"]["answer"])
    return _test_holds(program["condition"]["test"], answer)


def _legacy_holds(test: dict[str, Any], answer: str) -> bool:
    op = test["op"]
    if op == "always":
        return True
    if op == "eq":
        return same_answer(answer, str(test["value"]))
    if op == "even":
        return int(answer) % 2 == 0
    if op == "gt":
        return int(answer) > int(test["value"])
    if op == "warm":
        return answer in WARM_COLORS
    if op == "affirmative":
        return answer == "yes"
    if op == "single_word":
        return len(answer.split()) == 1
    if op == "len_gt":
        return len(answer) > int(test["value"])
    raise ProgramError(f"unknown generic test op {op!r}")


def corner_box(corner: str, width: int, height: int) -> tuple[int, int, int, int]:
    fx0, fy0, fx1, fy1 = CORNERS[corner]
    return round(fx0 * width), round(fy0 * height), round(fx1 * width), round(fy1 * height)


def _rgb(color: str, table: dict[str, tuple[int, int, int]]) -> tuple[int, int, int]:
    if color.startswith("#") and len(color) == 7:  # a near-miss shade
        return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)
    return table[color]


def draw_generic_action(image: Image.Image, action: dict[str, Any]) -> None:
    width, height = image.size
    x0, y0, x1, y1 = corner_box(action["corner"], width, height)
    inclusive = [x0, y0, x1 - 1, y1 - 1]  # PIL rectangles include their far edge; the box does not
    border = max(1, min(width, height) // 100)
    draw = ImageDraw.Draw(image)
    op = action["op"]
    if op == "panel":
        draw.rectangle(inclusive, fill=PANEL_FILL, outline=PANEL_BORDER, width=border)
        draw_text_centered(draw, (x0, y0, x1, y1), str(action["text"]), PANEL_BORDER)
    elif op == "swatch":
        draw.rectangle(
            inclusive, fill=_rgb(action["color"], GENERIC_COLORS), outline=PANEL_BORDER, width=border
        )
    elif op == "tint":
        region = np.asarray(image.crop((x0, y0, x1, y1)), dtype=np.float32)
        rgb = np.array(_rgb(action["color"], TINTS), dtype=np.float32)
        blended = (region * 0.4 + rgb * 0.6).round().astype(np.uint8)
        image.paste(Image.fromarray(blended, "RGB"), (x0, y0))
        draw.rectangle(inclusive, outline=PANEL_BORDER, width=border)
    else:
        raise ProgramError(f"unknown generic action op {op!r}")


def apply_generic(source_png: bytes, program: dict[str, Any], branch: bool | None = None) -> bytes:
    """Apply a generic program to any image (PNG/JPEG/… bytes) → PNG bytes of the same size."""
    image = decode_rgb(source_png)
    taken = generic_branch_taken(program) if branch is None else branch
    draw_generic_action(image, program["if_true" if taken else "if_false"])
    return encode_png(image)
