"""What an edit clause means: its action, the objects it names and the attributes it sets, with lemmas and
synonyms folded — so a branch that changes nothing, or two branches that do the same thing in other words, are
caught by meaning rather than by a list of phrasings.

An edit is reduced to an `EditMeaning`: the action (a canonical verb: recolor, add, remove, resize, transform,
write, move, rotate, flip, copy, light, blur, draw …), the nouns it names (singular, synonyms folded:
ball → sphere, box → cube), the attributes it sets (colours with British/American spelling and shade words
folded, big/large/huge → large, tiny/little → small, metallic → metal, numbers as digits) and the places it
names (beside = next to = by; left, top, corner …). Verbs are lemmatised by a small irregular table plus
suffix rules over the action lexicon (paints / painted / painting → paint); nouns by `inflect`.

* `is_visible_edit(text)`: the clause has an action verb that is not negated ("do not paint", "no change",
  "nothing") and is not only a keep-verb (leave, keep, stay, remain, preserve …). Generic verbs (make, turn,
  change, give, set) count as an action only with a result: an attribute, a comparative ("bigger") or an
  "into" ("turn it into a cone").
* `same_edit(a, b)`: both are visible and reduce to the same action, attributes, places and compatible
  objects (equal, or one side names only a pronoun or a generic "object").

The vocabulary is small and hand-made (no model, no downloaded data): it covers the edits a rewriter asks
for in VQA-driven editing; a verb outside it makes a clause count as no action, which the rewrite stage
turns into one repair request rather than a silent pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .answers import SPELLING_VARIANTS, _inflect

#: action verbs (lemma → canonical action); generic verbs are in GENERIC_VERBS
ACTION_VERBS: dict[str, str] = {
    **dict.fromkeys(("paint", "repaint", "color", "recolor", "tint", "dye", "shade", "colorize", "stain"), "recolor"),
    **dict.fromkeys(("add", "put", "place", "insert", "set", "position", "drop", "introduce", "spawn",
                     "include", "hang", "attach", "stand", "stack", "plant", "generate", "create", "mount",
                     "pin", "lay", "sit", "perch"), "add"),
    **dict.fromkeys(("remove", "delete", "erase", "eliminate", "clear", "cut", "hide", "vanish"), "remove"),
    **dict.fromkeys(("enlarge", "shrink", "resize", "scale", "grow", "magnify", "expand", "reduce", "double",
                     "halve", "stretch", "widen", "narrow", "lengthen", "shorten"), "resize"),
    **dict.fromkeys(("transform", "convert", "replace", "swap", "morph", "reshape", "substitute",
                     "exchange"), "transform"),
    **dict.fromkeys(("write", "label", "print", "inscribe", "caption", "spell", "letter", "annotate", "type",
                     "engrave", "display"), "write"),
    **dict.fromkeys(("move", "shift", "slide", "relocate", "push", "drag", "nudge", "reposition", "carry"), "move"),
    **dict.fromkeys(("rotate", "spin", "tilt", "turn over"), "rotate"),
    **dict.fromkeys(("flip", "mirror", "invert", "reverse"), "flip"),
    **dict.fromkeys(("copy", "duplicate", "clone", "replicate"), "copy"),
    **dict.fromkeys(("light", "illuminate", "brighten", "darken", "dim", "glow", "highlight", "outline",
                     "circle", "frame", "border", "mark", "underline"), "mark"),
    **dict.fromkeys(("blur", "pixelate", "sharpen", "fade"), "blur"),
    **dict.fromkeys(("draw", "sketch", "render", "depict", "show"), "draw"),
    **dict.fromkeys(("fill", "cover", "coat", "wrap", "texture", "pattern", "stripe", "decorate", "adorn",
                     "sprinkle", "scatter", "splash", "stamp", "overlay", "superimpose", "pour", "surround",
                     "enclose", "encircle", "dress", "crown", "sticker", "glue", "tape", "paste", "emboss",
                     "carve", "etch", "engrave", "scribble", "doodle"), "cover"),
    **dict.fromkeys(("raise", "lift", "lower", "arrange", "align", "stack", "pile", "line", "float", "hover",
                     "fly", "tip", "topple", "knock", "roll"), "move"),
    **dict.fromkeys(("wear",), "add"),
    **dict.fromkeys(("open", "close", "break", "crack", "melt", "bend", "fold", "crush", "tear"), "alter"),
}
#: verbs that act only with a result: "make it red", "turn it into a cone", "change its colour to blue"
GENERIC_VERBS = frozenset({"make", "turn", "change", "give", "alter", "modify", "edit", "adjust", "update",
                           "switch", "become", "have", "get", "apply", "use"})
#: verbs that ask to keep things as they are
KEEP_VERBS = frozenset({"leave", "keep", "stay", "remain", "preserve", "retain", "maintain", "let", "skip",
                        "ignore", "hold", "continue", "proceed", "stop", "wait", "rest", "do", "be", "look",
                        "need", "require", "want", "should", "must", "will", "can", "may"})
NEGATIONS = frozenset({"not", "no", "never", "nothing", "none", "nor", "neither", "without", "zero", "nobody"})
#: verbs that decline what follows them ("skip the edit entirely", "refrain from editing", "omit any change"):
#: an action after one of these in the same clause is not asked for
ABSTAIN_VERBS = frozenset({"skip", "omit", "forgo", "forego", "refrain", "abstain", "avoid", "decline",
                           "bypass", "withhold", "cancel", "pass"})
#: how many words after an abstaining verb its object may start ("skip over the proposed edit entirely")
ABSTAIN_REACH = 6
#: irregular verb forms → lemma
IRREGULAR: dict[str, str] = {
    "put": "put", "set": "set", "cut": "cut", "made": "make", "makes": "make", "making": "make", "gave": "give",
    "given": "give", "giving": "give", "wrote": "write", "written": "write", "writing": "write", "drew": "draw",
    "drawn": "draw", "drawing": "draw", "grew": "grow", "grown": "grow", "hung": "hang", "laid": "lay",
    "stood": "stand", "sat": "sit", "left": "leave", "kept": "keep", "done": "do", "did": "do", "does": "do",
    "doing": "do", "let": "let", "was": "be", "were": "be", "is": "be", "are": "be", "been": "be", "being": "be",
    "am": "be", "has": "have", "had": "have", "having": "have", "got": "get", "gotten": "get", "broke": "break",
    "broken": "break", "shown": "show", "showed": "show", "held": "hold", "spun": "spin", "became": "become",
    "shone": "shine", "dyed": "dye", "dyeing": "dye", "placed": "place", "placing": "place", "changes": "change",
    "changed": "change", "changing": "change", "shades": "shade", "shaded": "shade", "shading": "shade",
    "free": "free", "halved": "halve", "doubled": "double", "circled": "circle",
    "took": "take", "taken": "take", "taking": "take", "brought": "bring", "blew": "blow", "blown": "blow",
    "stuck": "stick", "rubbed": "rub", "wiped": "wipe",
}
COLOR_WORDS: dict[str, str] = {
    **{c: c for c in ("red", "blue", "green", "yellow", "purple", "orange", "pink", "brown", "gray", "cyan",
                      "black", "white", "gold", "silver", "magenta", "teal", "violet", "beige", "navy",
                      "maroon", "turquoise", "lime", "olive", "indigo", "crimson", "scarlet", "amber")},
    "grey": "gray", "golden": "gold", "silvery": "silver", "lilac": "purple", "lavender": "purple",
}
SIZE_WORDS: dict[str, str] = {
    **dict.fromkeys(("big", "large", "huge", "giant", "larger", "bigger", "enormous", "bigger", "tall", "taller",
                     "enlarge", "grow", "magnify", "expand", "double", "widen", "lengthen", "stretch"), "large"),
    **dict.fromkeys(("small", "tiny", "little", "smaller", "mini", "miniature", "short", "shorter", "shrink",
                     "reduce", "halve", "narrow", "shorten"), "small"),
}
MATERIAL_WORDS: dict[str, str] = {
    **dict.fromkeys(("metal", "metallic", "shiny", "chrome", "steel", "glossy"), "metal"),
    **dict.fromkeys(("rubber", "matte", "rubbery", "dull"), "rubber"),
    **dict.fromkeys(("glass", "transparent", "translucent"), "glass"),
    **dict.fromkeys(("wood", "wooden"), "wood"),
}
NOUN_SYNONYMS: dict[str, str] = {
    "ball": "sphere", "orb": "sphere", "globe": "sphere", "box": "cube", "block": "cube", "dice": "cube",
    "die": "cube", "cuboid": "cube", "cylinder": "cylinder", "tube": "cylinder", "can": "cylinder",
    "pyramid": "cone", "disc": "disk", "circle": "circle", "colour": "color", "hue": "color", "tint": "color",
    "picture": "image", "photo": "image", "scene": "image", "photograph": "image", "shape": "shape",
    "sign": "sign", "placard": "sign", "signboard": "sign", "board": "board", "blackboard": "board",
    "whiteboard": "board", "chalkboard": "board", "panel": "panel", "plaque": "panel", "label": "label",
    "tag": "label", "star": "star", "text": "text", "word": "text", "number": "number", "digit": "number",
    "figure": "number", "numeral": "number",
    # a painted mark: a stripe, a band, a strip, a line or a streak drawn across something is one kind of mark
    **dict.fromkeys(("stripe", "band", "strip", "streak", "line", "stroke", "bar"), "stripe"),
}
#: marks an edit paints onto a surface: "paint a gold stripe" creates one (an `add`), it recolours nothing
PAINTED_MARKS = frozenset({"stripe"})
#: words that introduce a new thing ("paint a stripe", "draw two lines"), unlike "paint the stripe red"
INDEFINITE = frozenset({"a", "an", "another", "some", "several", "few", "couple"})
#: how far after its verb a created mark's noun may come ("paint a thin golden stripe")
MARK_REACH = 5
#: words that describe keeping things as they are: never an object of an edit
KEEP_WORDS = frozenset({"unchanged", "untouched", "intact", "alone", "identical", "original", "current",
                        "unaltered", "unmodified", "unedited", "preserved", "steady", "static", "still", "now",
                        "whatsoever", "thing", "way", "place", "state", "condition", "present", "before",
                        "previously", "already", "exactly", "precisely", "needed", "necessary", "required",
                        "modification", "modifications", "edits", "editing", "changes", "alteration",
                        "alterations", "adjustment", "adjustments", "touch", "happen", "happens"})
#: nouns that name no particular thing: a pronoun-like target
GENERIC_NOUNS = frozenset({"object", "thing", "item", "one", "target", "it", "them", "this", "that", "these",
                           "those", "element", "piece", "entity", "subject", "shape", "color", "image", "size",
                           "way", "look", "appearance", "version", "edit", "change", "answer", "question",
                           "result", "same", "rest", "everything", "anything", "something", "all"})
#: places, folded
PLACE_WORDS: dict[str, str] = {
    **dict.fromkeys(("beside", "next", "by", "alongside", "near", "nearby", "adjacent", "close"), "beside"),
    "left": "left", "right": "right", **dict.fromkeys(("top", "above", "over", "upper", "atop"), "top"),
    **dict.fromkeys(("bottom", "below", "under", "beneath", "underneath", "lower"), "bottom"),
    **dict.fromkeys(("behind", "back", "rear"), "behind"), **dict.fromkeys(("front", "before"), "front"),
    "corner": "corner", **dict.fromkeys(("center", "centre", "middle", "central"), "center"),
    "wall": "wall", "floor": "floor", "ground": "floor", "table": "table", "background": "background",
}
STOPWORDS = frozenset("""a an the of to in on at for with and or but then so as its it's it their them they this
that these those there here is are be been being was were into onto from up down out off just only also
exactly very slightly clearly same please now its own each every all any some one own such than too much more
most while keeping keep keeps kept leaving which who whose what when where how if whether rid away around
instead along across""".split())
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?|\d+(?:\.\d+)?|[,;:]")
#: British spellings of the lexicon's verbs and nouns
_BRITISH = {"colour": "color", "colours": "colors", "coloured": "colored", "colouring": "coloring",
            "recolour": "recolor", "recolours": "recolors", "recoloured": "recolored", "recolouring": "recoloring",
            "colourise": "colorize", "colourised": "colorized", "grey": "gray", "centre": "center"}
#: action lemmas that are also everyday nouns: a verb only in a verb's position ("add a circle" vs "circle it")
NOUN_LIKE = frozenset({"circle", "frame", "border", "mark", "label", "print", "display", "stack", "cover",
                       "pattern", "stripe", "texture", "copy", "light", "plant", "drop", "stand", "sit", "clear",
                       "cut", "double", "type", "spell", "letter", "caption", "shade", "stain", "tint", "color",
                       "paint", "set", "place", "pin", "position", "show", "sketch", "spin", "dye", "outline",
                       "highlight", "glow", "wrap", "coat", "fill", "crack", "fold", "tear", "break", "swap",
                       "exchange", "move", "push", "slide", "shift", "scale", "melt", "open", "close", "mount",
                       "lay", "hide", "flip", "mirror", "reverse", "blur", "fade", "dim", "render", "crown",
                       "sticker", "glue", "tape", "paste", "stamp", "splash", "dress", "line", "pile", "roll",
                       "tip", "fly", "float", "knock", "doodle", "scribble", "overlay", "wear", "lift"})
#: phrasal verbs: (verb lemma, particle) → action ("take it out", "get rid of it")
PHRASAL: dict[tuple[str, str], str] = {
    ("take", "out"): "remove", ("take", "away"): "remove", ("take", "off"): "remove", ("get", "rid"): "remove",
    ("wipe", "out"): "remove", ("rub", "out"): "remove", ("pull", "out"): "remove", ("put", "up"): "add",
    ("stick", "on"): "add", ("bring", "in"): "add", ("swap", "out"): "transform", ("scale", "up"): "resize:large",
    ("scale", "down"): "resize:small", ("blow", "up"): "resize:large", ("turn", "over"): "rotate", ("turn", "around"): "rotate",
    ("light", "up"): "mark",
    # idioms that do nothing: "carry on", "move on", "go on"
    ("carry", "on"): "", ("move", "on"): "", ("go", "on"): "", ("hold", "on"): "", ("carry", "forward"): "",
    ("make", "sure"): "", ("make", "certain"): "",
}
_CONTRACTIONS = {"n't": " not", "'s": "", "'re": " are", "'ll": " will", "'ve": " have", "'d": " would",
                 "'m": " am"}


def words(text: str) -> list[str]:
    """Lowercase word tokens, contractions spelled out ("isn't" → "is not", "can't" → "can not")."""
    text = text.lower().replace("\u2019", "'").replace("can't", "can not").replace("won't", "will not")
    for short, long in _CONTRACTIONS.items():
        text = text.replace(short, long)
    return [_BRITISH.get(w, w) for w in _WORD.findall(text.replace("-", " "))]


@lru_cache(maxsize=4096)
def verb_lemma(word: str) -> str:
    """A verb's lemma by the irregular table, then suffix rules checked against the known verbs."""
    if word in IRREGULAR:
        return IRREGULAR[word]
    known = ACTION_VERBS.keys() | GENERIC_VERBS | KEEP_VERBS | ABSTAIN_VERBS | {verb for verb, _ in PHRASAL}
    if word in known:
        return word
    for suffix, repl in (("ies", "y"), ("ied", "y"), ("ying", "y"), ("ing", ""), ("ing", "e"), ("ed", ""),
                         ("ed", "e"), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            stem = word[: -len(suffix)] + repl
            if stem in known:
                return stem
            if len(stem) > 2 and stem[-1] == stem[-2] and stem[:-1] in known:  # "dropped", "slimming"
                return stem[:-1]
    return word


@lru_cache(maxsize=4096)
def noun_lemma(word: str) -> str:
    word = SPELLING_VARIANTS.get(word, word)
    if len(word) > 3 and word.isalpha() and word not in ("glass", "canvas", "dice", "news", "series"):
        single = _inflect().singular_noun(word)
        if single:
            word = single
    return NOUN_SYNONYMS.get(word, word)


@dataclass(frozen=True)
class EditMeaning:
    """One edit clause reduced to what it does; `action` None when it asks for no visible change. `result` is
    what the action produces (the new colour, size, object or text), `target` what it acts on, `places`
    where."""

    action: str | None
    target: frozenset[str]
    result: frozenset[str]
    places: frozenset[str]
    negated: bool = False

    @property
    def visible(self) -> bool:
        return self.action is not None


_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({"single": 1, "pair": 2, "couple": 2, "both": 2, "dozen": 12, "once": 1, "twice": 2})
del _NUMBER_WORDS["one"]  # "the red one", "one of": rarely a count in an edit clause; "a"/"an" never are
#: words after which an action word is a verb, not a noun ("add a circle" vs "circle the cube")
VERB_PRECEDERS = frozenset({"and", "then", "to", "please", "or", "also", "but", "not", "never", "first", "just",
                            "simply", "instead", "should", "must", "will", "can", "be", "is", "are", "been",
                            "get", "gets", "got", "would", "shall", "let", "you", "so", "now", "next", "finally",
                            "otherwise", "else", "immediately", "quickly", "carefully", "gently", "neatly"})
#: words that start the result of a transformation ("turn X into Y", "replace X with Y")
RESULT_MARKERS = frozenset({"into", "to", "with", "for", "as", "by"})


def _attribute(word: str) -> str | None:
    word = SPELLING_VARIANTS.get(word, word)
    for table, kind in ((COLOR_WORDS, "color"), (SIZE_WORDS, "size"), (MATERIAL_WORDS, "material")):
        if word in table:
            return f"{kind}:{table[word]}"
    if word.isdigit():
        return f"n:{int(float(word))}"
    number = _NUMBER_WORDS.get(word)
    return f"n:{number}" if number is not None else None


def _is_verb(tokens: list[str], index: int) -> bool:
    token = tokens[index]
    if verb_lemma(token) not in NOUN_LIKE:
        return True
    if token.endswith("ed") and token not in ("red", "bed", "shed"):
        return True
    previous = tokens[index - 1] if index else ","
    return previous in VERB_PRECEDERS or previous in (",", ";", ":") or previous.endswith("ly")


def _phrasal(tokens: list[str], index: int) -> str | None:
    """The action of a phrasal verb at `index` ("take … out", "get rid of"), its particle within 6 words."""
    lemma = verb_lemma(tokens[index])
    for offset in range(1, 7):  # "take the green rubber object out"
        if index + offset >= len(tokens) or tokens[index + offset] in (",", ";", ":"):
            break
        action = PHRASAL.get((lemma, tokens[index + offset]))
        if action is not None:
            return action
    return None


def _negated(tokens: list[str], index: int) -> bool:
    """Is the verb at `index` negated: a negation up to three words before it ("do not", "don't ever",
    "never", "must not", "without"), or "nothing"/"no …" as its object ("change nothing", "make no changes")?"""
    before: list[str] = []
    for token in reversed(tokens[max(0, index - 3) : index]):
        if token in (",", ";", ":"):  # "if not, remove it": the negation belongs to the condition
            break
        before.append(token)
    if any(t in NEGATIONS for t in before):
        return True
    for token in reversed(tokens[max(0, index - ABSTAIN_REACH) : index]):
        if token in (",", ";", ":", "and", "then", "but", "instead"):  # "avoid the cube and paint the sphere"
            break
        if verb_lemma(token) in ABSTAIN_VERBS:  # "skip the edit", "refrain from painting"
            return True
    after = tokens[index + 1 : index + 2]
    return bool(after) and after[0] in ("nothing", "no", "none", "neither")


@lru_cache(maxsize=4096)
def edit_meaning(text: str) -> EditMeaning:
    """The meaning of one edit clause (see the module docstring)."""
    tokens = words(text)
    action: str | None = None
    verb_at = -1
    negated = False
    generic_at: int | None = None
    items: list[tuple[int, str]] = []  # (position, term): nouns and attributes in order
    places: set[str] = set()
    for index, token in enumerate(tokens):
        if token in (",", ";", ":"):
            continue
        lemma = verb_lemma(token)
        verb_like = _is_verb(tokens, index)
        phrasal = _phrasal(tokens, index) if action is None and verb_like else None
        if phrasal == "":
            continue  # an idiom that does nothing ("carry on")
        if phrasal is not None:
            if _negated(tokens, index):
                negated = True
                continue
            action, _, size = phrasal.partition(":")
            verb_at = index
            if size:
                items.append((index, f"size:{size}"))
            continue
        if lemma in ACTION_VERBS and action is None and verb_like:
            if _negated(tokens, index):
                negated = True
                continue
            action, verb_at = ACTION_VERBS[lemma], index
            if lemma in SIZE_WORDS:
                items.append((index, f"size:{SIZE_WORDS[lemma]}"))
            continue
        if lemma in GENERIC_VERBS and verb_like and action is None and generic_at is None:
            if _negated(tokens, index):
                negated = True
            else:
                generic_at = index
            continue
        attribute = _attribute(token)
        if attribute is not None:
            items.append((index, attribute))
            continue
        if token == "right" and index + 1 < len(tokens) and tokens[index + 1] in PLACE_WORDS:
            continue  # "right beside it": an intensifier, not a side
        if token in PLACE_WORDS:
            places.add(PLACE_WORDS[token])
            continue
        if token in STOPWORDS or token in NEGATIONS or lemma in KEEP_VERBS or lemma in GENERIC_VERBS:
            continue
        if lemma in ABSTAIN_VERBS:
            continue
        mark = not verb_like and noun_lemma(token) in PAINTED_MARKS  # "two red lines", "stripes"
        if lemma in ACTION_VERBS and (verb_like or lemma != token) and not mark:  # a verb form ("painted")
            continue
        if token in KEEP_WORDS:
            continue
        noun = noun_lemma(token)
        if noun not in GENERIC_NOUNS:
            items.append((index, noun))
    if action is None and generic_at is not None:
        action, verb_at = _generic_action(tokens, generic_at, [t for _, t in items]), generic_at
    if action is None:
        return EditMeaning(None, frozenset(), frozenset(), frozenset(places), negated)
    if action in ("recolor", "draw", "cover", "mark") and _creates_mark(tokens, verb_at, items):
        action = "add"  # "paint a gold stripe along the edge" = "add a gold band at the edge"
    target, result = _split(action, tokens, verb_at, items)
    return EditMeaning(action, frozenset(target), frozenset(result), frozenset(places), negated)


def _creates_mark(tokens: list[str], verb_at: int, items: list[tuple[int, str]]) -> bool:
    """Does the verb at `verb_at` create a painted mark (a stripe, band, line …): its object, introduced as new
    right after it, is one ("paint a gold stripe", "draw two thin red lines"; not "paint the stripe red")?"""
    following = tokens[verb_at + 1 : verb_at + 2]
    if not following or not (following[0] in INDEFINITE or following[0].isdigit() or following[0] in _NUMBER_WORDS):
        return False
    return any(t in PAINTED_MARKS for i, t in items if verb_at < i <= verb_at + MARK_REACH)


def _split(action: str, tokens: list[str], verb_at: int, items: list[tuple[int, str]]) -> tuple[set, set]:
    """(target, result) terms: what the action acts on, and what it produces."""
    terms = [t for _, t in items]
    if action in ("recolor", "resize"):
        kind = "color" if action == "recolor" else "size"
        from_verb = [t for i, t in items if i == verb_at and t.startswith(f"{kind}:")]  # "enlarge", "scale up"
        chosen = from_verb or [t for t in terms if t.startswith(f"{kind}:") or (action == "resize" and t.startswith("n:"))]
        result = {chosen[-1]} if chosen else set()
        return {t for i, t in items if t not in result or i != verb_at} - result, result
    if action == "transform":
        marker = max((i for i, t in enumerate(tokens) if t in RESULT_MARKERS and i > verb_at), default=None)
        if marker is None:
            return set(), set(terms)
        return {t for i, t in items if i < marker}, {t for i, t in items if i > marker}
    if action in ("add", "draw", "write", "copy", "cover", "mark"):
        return set(), set(terms)
    return set(terms), set()


def _generic_action(tokens: list[str], at: int, terms: list[str]) -> str | None:
    """What a generic verb does, from its result: "into" → transform, a colour → recolor, a size → resize,
    a material → transform; nothing → no action ("make it look the same")."""
    rest = tokens[at + 1 :]
    if "into" in rest:
        return "transform"
    kinds = {t.split(":")[0] for t in terms if ":" in t}
    if "color" in kinds:
        return "recolor"
    if "size" in kinds:
        return "resize"
    if "material" in kinds:
        return "transform"
    if any(":" not in t for t in terms):  # "make the cat wear a hat", "give the cube a crown"
        return "alter"
    return None


def is_visible_edit(text: str) -> bool:
    """Does the clause ask for a visible change (an action verb, not negated, not only keeping things)?"""
    return edit_meaning(text).visible


def _compatible(a: frozenset[str], b: frozenset[str]) -> bool:
    return not a or not b or a <= b or b <= a


def same_edit(first: str, second: str) -> bool:
    """Do two visible edit clauses reduce to the same action, result and places on compatible targets?"""
    a, b = edit_meaning(first), edit_meaning(second)
    if not (a.visible and b.visible) or a.action != b.action:
        return False
    if a.result != b.result or not _compatible(a.places, b.places):
        return False
    return _compatible(a.target, b.target)


def content_terms(text: str) -> frozenset[str]:
    """The clause's meaning as a bag of terms (actions, objects, attributes, places) for aligning an edit with
    the instruction's clauses."""
    terms: set[str] = set()
    tokens = words(text)
    for index, token in enumerate(tokens):
        if token in (",", ";", ":"):
            continue
        lemma = verb_lemma(token)
        phrasal = _phrasal(tokens, index) if _is_verb(tokens, index) else None
        if phrasal is not None:
            if phrasal:
                terms.add(f"act:{phrasal.partition(':')[0]}")
            continue
        if lemma in ACTION_VERBS and _is_verb(tokens, index):
            terms.add(f"act:{ACTION_VERBS[lemma]}")
            continue
        attribute = _attribute(token)
        if attribute is not None:
            terms.add(attribute)
            continue
        if token in PLACE_WORDS:
            terms.add(f"at:{PLACE_WORDS[token]}")
            continue
        if token in STOPWORDS or token in NEGATIONS or lemma in KEEP_VERBS or lemma in GENERIC_VERBS:
            continue
        noun = noun_lemma(token)
        if noun not in GENERIC_NOUNS:
            terms.add(noun)
    return frozenset(terms)
