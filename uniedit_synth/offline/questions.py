"""Questions over the scene graph: selectors and queries (what a question *means*), their evaluation on a
scene, the seeded question generator per category, and the answer space of a question.

A question is a `question_spec` dict, JSON-serialisable and evaluated by `answer_query`:
`{"category": "color", "kind": "attr", "query": {"type": "attr", "attr": "color", "ref": {"shape": "cube"}}}`.
The same query later decides which branch of an edit program runs, so question and edit can never disagree.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from ..method.answers import mentions_answer, normalise_answer  # noqa: F401  (re-exported for the world's users)
from .world import COLORS, GRID_COLS, GRID_ROWS, SHAPES, SIGN_WORDS, Scene, SceneObject, Sign, generate_scene

SCENE_CATEGORIES: tuple[str, ...] = (
    "count", "color", "shape", "location", "ocr", "math", "knowledge", "yes_no", "multi-choice",
)  # fmt: skip
ATTRS: tuple[str, ...] = ("size", "color", "material", "shape")
RELATIONS: dict[str, tuple[int, int]] = {  # direction -> (dcol, drow) of the step away from the anchor
    "left_of": (-1, 0),
    "right_of": (1, 0),
    "behind": (0, -1),
    "in_front_of": (0, 1),
}
RELATION_PHRASES = {
    "left_of": "directly to the left of",
    "right_of": "directly to the right of",
    "behind": "directly behind",
    "in_front_of": "directly in front of",
}
# The knowledge-lite fact table: properties of shapes and materials that a question can reason over.
ROLLING_SHAPES = frozenset({"sphere", "cylinder"})
FLAT_TOP_SHAPES = frozenset({"cube", "cylinder"})
POINTED_SHAPES = frozenset({"cone"})
MAGNETIC_MATERIALS = frozenset({"metal"})
WARM_COLORS = frozenset({"red", "orange", "yellow", "brown", "pink"})


class QueryError(ValueError):
    """A query does not have exactly one answer on this scene (no or several referents)."""


# ---------------------------------------------------------------- selectors and queries


def matches(obj: SceneObject, where: dict[str, Any]) -> bool:
    for key, wanted in where.items():
        if key == "relation":
            continue
        if key == "shape_in":
            if obj.shape not in wanted:
                return False
        elif getattr(obj, key) != wanted:
            return False
    return True


def select(scene: Scene, selector: dict[str, Any]) -> list[SceneObject]:
    """Objects a selector picks: attribute filters, optionally "the object directly <dir> the <anchor>"."""
    relation = selector.get("relation")
    if relation is None:
        return [o for o in scene.objects if matches(o, selector)]
    anchors = select(scene, relation["anchor"])
    if len(anchors) != 1:
        raise QueryError(f"relation anchor matches {len(anchors)} objects")
    anchor = anchors[0]
    dcol, drow = RELATIONS[relation["dir"]]
    by_cell = {(o.col, o.row): o for o in scene.objects}
    col, row = anchor.col + dcol, anchor.row + drow
    while 0 <= col < GRID_COLS and 0 <= row < GRID_ROWS:
        if (col, row) in by_cell:
            found = by_cell[(col, row)]
            return [found] if matches(found, selector) else []
        col, row = col + dcol, row + drow
    return []


def select_one(scene: Scene, selector: dict[str, Any]) -> SceneObject:
    found = select(scene, selector)
    if len(found) != 1:
        raise QueryError(f"selector {selector} matches {len(found)} objects, expected exactly one")
    return found[0]


def answer_query(scene: Scene, query: dict[str, Any]) -> int | str:
    """The value a query has on a scene (int for counts and arithmetic, str otherwise)."""
    kind = query["type"]
    if kind == "count":
        return len(select(scene, query["filter"]))
    if kind == "attr":
        return str(getattr(select_one(scene, query["ref"]), query["attr"]))
    if kind == "side":
        return select_one(scene, query["ref"]).side
    if kind == "read":
        item = scene.wall_item(query["slot"])
        if not isinstance(item, Sign) or not item.text:
            raise QueryError(f"no sign with text in slot {query['slot']}")
        return item.text
    if kind == "board":
        board = next((b for b in scene.boards if b.slot == query["slot"]), None)
        if board is None:
            raise QueryError(f"no board in slot {query['slot']}")
        return board.value()
    if kind == "count_arith":
        first, second = (len(select(scene, f)) for f in query["filters"])
        return first + second if query["op"] == "+" else first - second
    if kind == "verify":  # a yes/no question: is the inner query's value the stated one?
        inner = answer_query(scene, query["query"])
        if query.get("op") == "gt":
            return "yes" if int(inner) > int(query["value"]) else "no"
        return "yes" if str(inner) == str(query["value"]) else "no"
    if kind == "choice":  # a multiple-choice question: the inner value, which is one of the options
        value = answer_query(scene, query["query"])
        if str(value) not in [str(o) for o in query["options"]]:
            raise QueryError(f"the answer {value!r} is not among the options")
        return value
    raise QueryError(f"unknown query type {kind!r}")


# ---------------------------------------------------------------- phrasing of references


def noun_phrase(where: dict[str, Any], plural: bool = False) -> str:
    """An indefinite noun phrase for a filter: "large red metal cube", "rubber objects", "spheres or cylinders"."""
    words = [where[k] for k in ("size", "color", "material") if k in where]
    if "shape" in where:
        noun = where["shape"]
    elif "shape_in" in where:
        noun = " or ".join(where["shape_in"])
    else:
        noun = "object"
    if plural:
        noun = " or ".join(f"{n}s" for n in noun.split(" or "))
    return " ".join([*words, noun])


def describe(selector: dict[str, Any]) -> str:
    """The definite description of a unique referent: "the small blue sphere", "the object directly…"."""
    relation = selector.get("relation")
    if relation is None:
        return f"the {noun_phrase(selector)}"
    return f"the object {RELATION_PHRASES[relation['dir']]} {describe(relation['anchor'])}"


def unique_filter(
    scene: Scene, obj: SceneObject, rng: random.Random, exclude: tuple[str, ...] = (), avoid: str = ""
) -> dict[str, Any] | None:
    """The shortest attribute filter that picks `obj` alone, without the `exclude` attributes and without any
    value that would state `avoid` (an answer); None if no such filter exists."""
    usable = [
        a for a in ATTRS if a not in exclude and not (avoid and mentions_answer(getattr(obj, a), avoid))
    ]
    subsets: list[tuple[str, ...]] = []
    for size in range(1, len(usable) + 1):
        group = [s for s in _combinations(usable, size)]
        rng.shuffle(group)
        subsets.extend(group)
    for subset in subsets:
        where = {a: getattr(obj, a) for a in ATTRS if a in subset}
        if len(select(scene, where)) == 1:
            return where
    return None


def _combinations(items: list[str], k: int) -> list[tuple[str, ...]]:
    if k == 0:
        return [()]
    if len(items) < k:
        return []
    head, tail = items[0], items[1:]
    return [(head, *rest) for rest in _combinations(tail, k - 1)] + _combinations(tail, k)


def slot_phrase(scene: Scene, slot: str, noun: str) -> str:
    """How to name a wall item: "the sign" when it is the only one of its kind, else "the sign on the left"."""
    same_kind = [s for s in scene.signs if s.text] if noun == "sign" else scene.boards
    if len(same_kind) == 1:
        return f"the {noun}"
    where = "in the middle" if slot == "middle" else f"on the {slot}"
    return f"the {noun} {where}"


# ---------------------------------------------------------------- question generators

COUNT_FILTERS: tuple[tuple[str, ...], ...] = (
    ("shape",),
    ("color",),
    ("size",),
    ("material",),
    ("color", "shape"),
    ("size", "shape"),
    ("material", "shape"),
)
COUNT_FILTER_WEIGHTS = (4, 2, 3, 3, 1, 1, 1)
QuestionDraft = tuple[str, dict[str, Any]]  # question text, query
Generator = Callable[[Scene, random.Random], QuestionDraft | None]


def _count_question(scene: Scene, rng: random.Random) -> QuestionDraft | None:
    obj = rng.choice(scene.objects)
    # broad filters more often than narrow ones, so counts spread beyond 1
    keys = rng.choices(COUNT_FILTERS, weights=COUNT_FILTER_WEIGHTS)[0]
    where = {k: getattr(obj, k) for k in keys}
    plural = noun_phrase(where, plural=True)
    text = rng.choice(
        (
            f"How many {plural} are there?",
            f"How many {plural} are in the picture?",
            f"What is the number of {plural} in the scene?",
        )
    )
    return text, {"type": "count", "filter": where}


def _attr_question(attr: str) -> Generator:
    def generate(scene: Scene, rng: random.Random) -> QuestionDraft | None:
        obj = rng.choice(scene.objects)
        where = unique_filter(scene, obj, rng, exclude=(attr,))
        if where is None:
            return None
        ref = describe(where)
        word = "color" if attr == "color" else "shape"
        text = rng.choice(
            (f"What {word} is {ref}?", f"What is the {word} of {ref}?", f"Which {word} does {ref} have?")
        )
        return text, {"type": "attr", "attr": attr, "ref": where}

    return generate


def _location_question(scene: Scene, rng: random.Random) -> QuestionDraft | None:
    obj = rng.choice(scene.objects)
    if rng.random() < 0.4:
        where = unique_filter(scene, obj, rng)
        if where is None:
            return None
        ref = describe(where)
        text = rng.choice(
            (
                f"On which side of the image is {ref}?",
                f"Which half of the picture is {ref} in?",
                f"Which side of the scene does {ref} stand on?",
            )
        )
        return text, {"type": "side", "ref": where}
    direction = rng.choice(tuple(RELATIONS))
    anchor = unique_filter(scene, obj, rng)
    if anchor is None:
        return None
    ref = {"relation": {"dir": direction, "anchor": anchor}}
    if len(select(scene, ref)) != 1:
        return None
    attr = rng.choice(("color", "shape"))
    text = f"What {attr} is {describe(ref)}?"
    return text, {"type": "attr", "attr": attr, "ref": ref}


def _ocr_question(scene: Scene, rng: random.Random) -> QuestionDraft | None:
    signs = [s for s in scene.signs if s.text]
    if not signs:
        return None
    sign = rng.choice(signs)
    where = slot_phrase(scene, sign.slot, "sign")
    text = rng.choice(
        (
            f"What word is written on {where}?",
            f"What does {where} say?",
            f"Which word can be read on {where}?",
        )
    )
    return text, {"type": "read", "slot": sign.slot}


def _math_question(scene: Scene, rng: random.Random) -> QuestionDraft | None:
    if scene.boards and rng.random() < 0.7:
        board = rng.choice(scene.boards)
        where = slot_phrase(scene, board.slot, "board")
        text = rng.choice(
            (
                f"What is the result of the calculation on {where}?",
                f"What number should replace the question mark on {where}?",
                f"What does the sum on {where} come to?",
            )
        )
        return text, {"type": "board", "slot": board.slot}
    shapes = sorted({o.shape for o in scene.objects})
    if len(shapes) < 2:
        return None
    first, second = rng.sample(shapes, 2)
    f1, f2 = {"shape": first}, {"shape": second}
    p1, p2 = noun_phrase(f1, plural=True), noun_phrase(f2, plural=True)
    n1, n2 = len(select(scene, f1)), len(select(scene, f2))
    if n1 > n2 and rng.random() < 0.5:
        return f"How many more {p1} than {p2} are there?", {
            "type": "count_arith",
            "op": "-",
            "filters": [f1, f2],
        }
    text = rng.choice(
        (
            f"What is the number of {p1} plus the number of {p2}?",
            f"How many {p1} and {p2} are there in total?",
        )
    )
    return text, {"type": "count_arith", "op": "+", "filters": [f1, f2]}


def _knowledge_question(scene: Scene, rng: random.Random) -> QuestionDraft | None:
    choice = rng.randrange(4)
    if choice == 0:
        metal = [o for o in scene.objects if o.material in MAGNETIC_MATERIALS]
        if len(metal) != 1:
            return None
        text = "A magnet is held just above the scene. What color is the one object it would attract?"
        return text, {"type": "attr", "attr": "color", "ref": {"material": "metal"}}
    if choice == 1:
        if not any(o.shape in ROLLING_SHAPES for o in scene.objects):
            return None
        text = "If the floor were tilted, how many objects would roll away?"
        return text, {"type": "count", "filter": {"shape_in": sorted(ROLLING_SHAPES)}}
    if choice == 2:
        if not any(o.material in MAGNETIC_MATERIALS for o in scene.objects):
            return None
        text = "How many objects in the scene would stick to a magnet?"
        return text, {"type": "count", "filter": {"material": "metal"}}
    cones = [o for o in scene.objects if o.shape in POINTED_SHAPES]
    if len(cones) != 1:
        return None
    text = "What color is the only object with a sharp pointed tip?"
    return text, {"type": "attr", "attr": "color", "ref": {"shape": "cone"}}


def _yes_no_question(scene: Scene, rng: random.Random) -> QuestionDraft | None:
    """A yes/no question whose statement (kept in the query) an instruction can test as a condition: about
    an object's colour or shape (the stated value present in the scene), a count above a threshold, or a side."""
    form = rng.randrange(3)
    obj = rng.choice(scene.objects)
    if form == 0:
        attr = rng.choice(("color", "shape"))
        where = unique_filter(scene, obj, rng, exclude=(attr,))
        if where is None:
            return None
        values = sorted({str(getattr(o, attr)) for o in scene.objects})
        value = getattr(obj, attr) if rng.random() < 0.5 or len(values) < 2 else rng.choice(values)
        ref = describe(where)
        stated = value if attr == "color" else f"{'an' if value[0] in 'aeiou' else 'a'} {value}"
        text = rng.choice((f"Is {ref} {stated}?", f"Is it true that {ref} is {stated}?"))
        inner = {"type": "attr", "attr": attr, "ref": where}
        return text, {"type": "verify", "query": inner, "value": value, "statement": f"{ref} is {stated}"}
    if form == 1:
        keys = rng.choices(COUNT_FILTERS, weights=COUNT_FILTER_WEIGHTS)[0]
        where = {k: getattr(obj, k) for k in keys}
        n = len(select(scene, where))
        threshold = max(1, n + rng.choice((-1, 0, 0, 1)))
        plural = noun_phrase(where, plural=True)
        text = rng.choice((f"Are there more than {threshold} {plural}?", f"Is the number of {plural} above {threshold}?"))
        inner = {"type": "count", "filter": where}
        statement = f"there are more than {threshold} {plural}"
        return text, {"type": "verify", "query": inner, "op": "gt", "value": threshold, "statement": statement}
    where = unique_filter(scene, obj, rng)
    if where is None:
        return None
    side = obj.side if rng.random() < 0.5 else ("left" if obj.side == "right" else "right")
    ref = describe(where)
    text = rng.choice((f"Is {ref} on the {side} side of the picture?", f"Does {ref} stand in the {side} half?"))
    inner = {"type": "side", "ref": where}
    return text, {"type": "verify", "query": inner, "value": side, "statement": f"{ref} stands in the {side} half"}


def _choice_question(scene: Scene, rng: random.Random) -> QuestionDraft | None:
    """A multiple-choice question: a colour, shape or count question with three or four options listed."""
    form = rng.randrange(3)
    if form < 2:
        attr = ("color", "shape")[form]
        draft = _attr_question(attr)(scene, rng)
        if draft is None:
            return None
        _, inner = draft
        pool = list(COLORS) if attr == "color" else list(SHAPES)
    else:
        draft = _count_question(scene, rng)
        if draft is None:
            return None
        _, inner = draft
        pool = [str(v) for v in range(1, len(scene.objects) + 1)]
    try:
        value = str(answer_query(scene, inner))
    except QueryError:
        return None
    others = [v for v in pool if v != value]
    if len(others) < 2:
        return None
    options = [value, *rng.sample(others, min(len(others), rng.choice((2, 3))))]
    rng.shuffle(options)
    if form == 2:
        options = sorted(options, key=int)
    stem = draft[0].rstrip("?")
    listed = ", ".join(options[:-1]) + f" or {options[-1]}"
    text = rng.choice((f"{stem}? Choose one: {listed}.", f"{stem}: {listed}?"))
    typed = [int(o) for o in options] if form == 2 else options
    return text, {"type": "choice", "query": inner, "options": typed}


GENERATORS: dict[str, Generator] = {
    "count": _count_question,
    "color": _attr_question("color"),
    "shape": _attr_question("shape"),
    "location": _location_question,
    "ocr": _ocr_question,
    "math": _math_question,
    "knowledge": _knowledge_question,
    "yes_no": _yes_no_question,
    "multi-choice": _choice_question,
}
SCENE_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "ocr": ("sign", "free_slot"),
    "math": ("board",),
}


def format_answer(value: int | str) -> str:
    return str(value)


def generate_question(
    scene: Scene, category: str, rng: random.Random, tries: int = 24
) -> tuple[str, str, dict]:
    """(question, answer, question_spec) for `category` on `scene`; raises QueryError if none fits the scene.

    A question never states its own answer (a question like that would leak it into the instruction), except
    a multiple-choice question, whose options list it among the others.
    """
    generator = GENERATORS[category]
    for _ in range(tries):
        draft = generator(scene, rng)
        if draft is None:
            continue
        text, query = draft
        try:
            value = answer_query(scene, query)
        except QueryError:
            continue
        answer = format_answer(value)
        if mentions_answer(text, answer) and query["type"] != "choice":  # options list the answer by design
            continue
        return text, answer, {"category": category, "query": query}
    raise QueryError(f"no {category} question fits this scene")


def generate_vqa(
    rng: random.Random, category: str, size: int = 256
) -> tuple[Scene, str, str, dict[str, Any]]:
    """A scene plus one question of `category` about it, drawn only from `rng` (new scenes until one fits)."""
    if category not in GENERATORS:
        raise ValueError(f"unknown scene category {category!r} (known: {', '.join(SCENE_CATEGORIES)})")
    while True:
        scene = generate_scene(rng, size=size, require=SCENE_REQUIREMENTS.get(category, ()))
        try:
            question, answer, spec = generate_question(scene, category, rng)
        except QueryError:
            continue
        return scene, question, answer, spec


# ---------------------------------------------------------------- answer spaces

BOARD_WINDOW = 6


def possible_answers(scene: Scene, query: dict[str, Any]) -> list[int | str]:
    """Every answer the question could have had on a scene like this one (same objects count, same wall),
    as far as the question's own construction allows: a condition is *decided in advance* when it has the
    same truth value for all of them.

    Counts are between 1 and the number of objects (a counted filter is drawn from an object in the scene,
    so it is never 0); sums of two such counts are at least 2; colours, shapes, sides and sign words range
    over the world's vocabularies; a board's result over a window around its value.
    """
    kind = query["type"]
    n_objects = len(scene.objects)
    if kind == "count":
        return list(range(1, n_objects + 1))
    if kind == "count_arith":
        if query["op"] == "+":
            return list(range(2, n_objects + 1))
        return list(range(1, max(2, n_objects - 1)))
    if kind == "attr":
        return list(COLORS) if query["attr"] == "color" else list(SHAPES)
    if kind == "side":
        return ["left", "right"]
    if kind == "read":
        return list(SIGN_WORDS)
    if kind == "board":
        value = int(answer_query(scene, query))
        return list(range(value - BOARD_WINDOW, value + BOARD_WINDOW + 1))
    if kind == "verify":
        return ["yes", "no"]
    if kind == "choice":
        return list(query["options"])
    raise QueryError(f"unknown query type {kind!r}")


def plausible_answers(scene: Scene, query: dict[str, Any]) -> list[int | str]:
    """The answers a plan's distractor candidate is drawn from: for colours and shapes, the values present in
    the scene, so a distractor never names something absent from the picture ("if it is pink" with nothing
    pink in sight is settled without answering the question); sign words: the words on the wall. A single
    value means a condition could be settled by a glance, and the plan then picks another style. Other
    questions: every possible answer."""
    kind = query["type"]
    if kind == "attr":
        return sorted({str(getattr(o, query["attr"])) for o in scene.objects})
    if kind == "read":
        return sorted({s.text for s in scene.signs if s.text})
    return possible_answers(scene, query)
