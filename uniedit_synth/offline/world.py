"""The offline world's scene graph: objects on a floor grid, signs and arithmetic boards on a wall, and the
seeded generator that builds one scene.

A scene is plain data (pydantic, JSON round-trips exactly), so it travels in `VQARecord.meta["scene"]`, the
edit program is applied to it, and the renderer draws it. Geometry is symbolic: objects sit in the cells of a
`GRID_COLS` × `GRID_ROWS` floor grid (row 0 at the back, column 0 on the left; one object per cell, so
nothing overlaps), and wall items hang in one of three slots. The renderer decides the pixels.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SHAPES: tuple[str, ...] = ("cube", "sphere", "cylinder", "cone")
COLORS: dict[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128),
    "red": (200, 40, 40),
    "blue": (40, 80, 210),
    "green": (40, 160, 60),
    "brown": (130, 80, 40),
    "purple": (130, 50, 170),
    "cyan": (40, 190, 200),
    "yellow": (235, 200, 40),
    "orange": (240, 130, 30),
    "pink": (240, 130, 190),
}
SIZES: tuple[str, ...] = ("small", "large")
MATERIALS: tuple[str, ...] = ("metal", "rubber")
SLOTS: tuple[str, ...] = ("left", "middle", "right")
ARITH_OPS: tuple[str, ...] = ("+", "-", "x")
GRID_COLS = 4
GRID_ROWS = 3
ROW_NAMES: tuple[str, ...] = ("back", "middle", "front")
# Short words for signs: none is a colour, shape, size, material or number word, so a sign never
# collides with another attribute in a question or instruction.
SIGN_WORDS: tuple[str, ...] = (
    "CAFE",
    "OPEN",
    "EXIT",
    "LEMON",
    "PIANO",
    "RIVER",
    "TIGER",
    "MANGO",
    "ZEBRA",
    "OCEAN",
    "APPLE",
    "ROBOT",
    "PIZZA",
    "CANDY",
    "HOTEL",
    "TAXI",
    "BOOK",
    "STAR",
    "MOON",
    "BREAD",
    "TRAIN",
    "CLOCK",
    "HONEY",
    "EAGLE",
    "IGLOO",
    "UMBRELLA",
    "ORBIT",
    "ISLAND",
    "ATLAS",
    "ECHO",
    "VIOLIN",
    "KIWI",
)

Shape = Literal["cube", "sphere", "cylinder", "cone"]
Size = Literal["small", "large"]
Material = Literal["metal", "rubber"]
Slot = Literal["left", "middle", "right"]


class SceneObject(BaseModel):
    """One solid on the floor grid."""

    model_config = ConfigDict(extra="forbid")

    id: int
    shape: Shape
    color: str
    size: Size
    material: Material
    col: int = Field(ge=0, lt=GRID_COLS)
    row: int = Field(ge=0, lt=GRID_ROWS)

    @property
    def side(self) -> str:
        """Which half of the picture the object stands in."""
        return "left" if self.col < GRID_COLS // 2 else "right"


class Sign(BaseModel):
    """A white panel on the wall; `text` empty means a blank panel that an edit may write on."""

    model_config = ConfigDict(extra="forbid")

    slot: Slot
    text: str = ""


class Board(BaseModel):
    """A chalkboard showing `a op b = ?`; an edit writes the result in place of the question mark."""

    model_config = ConfigDict(extra="forbid")

    slot: Slot
    a: int
    op: Literal["+", "-", "x"]
    b: int
    result: str | None = None

    def value(self) -> int:
        if self.op == "+":
            return self.a + self.b
        if self.op == "-":
            return self.a - self.b
        return self.a * self.b

    def label(self) -> str:
        return f"{self.a} {self.op} {self.b} = {self.result if self.result is not None else '?'}"


class Scene(BaseModel):
    """A whole picture: square canvas of `size` pixels, floor objects, wall signs and boards."""

    model_config = ConfigDict(extra="forbid")

    size: int = Field(default=256, ge=64, le=2048)
    objects: list[SceneObject] = Field(default_factory=list)
    signs: list[Sign] = Field(default_factory=list)
    boards: list[Board] = Field(default_factory=list)

    def occupied_cells(self) -> set[tuple[int, int]]:
        return {(o.col, o.row) for o in self.objects}

    def free_cells(self) -> list[tuple[int, int]]:
        taken = self.occupied_cells()
        return [(c, r) for r in range(GRID_ROWS) for c in range(GRID_COLS) if (c, r) not in taken]

    def wall_item(self, slot: str) -> Sign | Board | None:
        for item in (*self.signs, *self.boards):
            if item.slot == slot:
                return item
        return None

    def free_slots(self) -> list[str]:
        """Slots with nothing on them or with a blank panel: places an edit can write text."""
        out = []
        for slot in SLOTS:
            item = self.wall_item(slot)
            if item is None or (isinstance(item, Sign) and not item.text):
                out.append(slot)
        return out

    def next_object_id(self) -> int:
        return max((o.id for o in self.objects), default=-1) + 1


def random_board(rng: random.Random, slot: str) -> Board:
    op = rng.choice(ARITH_OPS)
    if op == "+":
        a, b = rng.randint(1, 20), rng.randint(1, 20)
    elif op == "-":
        a = rng.randint(5, 20)
        b = rng.randint(1, a - 1)
    else:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
    return Board(slot=slot, a=a, op=op, b=b)


def generate_scene(
    rng: random.Random,
    size: int = 256,
    require: Iterable[str] = (),
    min_objects: int = 3,
    max_objects: int = 7,
) -> Scene:
    """A random scene drawn only from `rng`.

    `require` asks for wall content a question needs: "sign" (a sign with a word), "board" (an arithmetic
    board) and/or "free_slot" (an empty slot or blank panel an edit can write on).
    """
    required = set(require)
    unknown = required - {"sign", "board", "free_slot"}
    if unknown:
        raise ValueError(f"generate_scene: unknown requirement(s) {sorted(unknown)}")
    n_objects = rng.randint(min_objects, max_objects)
    cells = [(c, r) for r in range(GRID_ROWS) for c in range(GRID_COLS)]
    rng.shuffle(cells)
    objects = [
        SceneObject(
            id=index,
            shape=rng.choice(SHAPES),
            color=rng.choice(tuple(COLORS)),
            size=rng.choice(SIZES),
            material=rng.choice(MATERIALS),
            col=col,
            row=row,
        )
        for index, (col, row) in enumerate(sorted(cells[:n_objects], key=lambda cell: (cell[1], cell[0])))
    ]
    # Wall: decide each slot's content, then patch in whatever `require` still lacks.
    kinds: dict[str, str] = {}
    for slot in SLOTS:
        kinds[slot] = rng.choices(("sign", "board", "blank", "empty"), weights=(3, 2, 1, 3))[0]
    shuffled = list(SLOTS)
    rng.shuffle(shuffled)
    satisfies = {"sign": ("sign",), "board": ("board",), "free_slot": ("blank", "empty")}
    reserved: set[str] = set()
    for need in ("sign", "board", "free_slot"):
        if need not in required:
            continue
        have = [s for s in shuffled if kinds[s] in satisfies[need] and s not in reserved]
        slot = have[0] if have else next(s for s in shuffled if s not in reserved)
        if not have:
            kinds[slot] = satisfies[need][-1]
        reserved.add(slot)
    signs: list[Sign] = []
    boards: list[Board] = []
    words = list(SIGN_WORDS)
    rng.shuffle(words)
    for slot in SLOTS:
        kind = kinds[slot]
        if kind == "sign":
            signs.append(Sign(slot=slot, text=words.pop()))
        elif kind == "blank":
            signs.append(Sign(slot=slot, text=""))
        elif kind == "board":
            boards.append(random_board(rng, slot))
    return Scene(size=size, objects=objects, signs=signs, boards=boards)
