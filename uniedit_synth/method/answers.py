"""Answers as text: the one `normalise_answer` of the package and the answer-leak check (v2).

An instruction leaks its answer when the answer appears in it in *any* surface form: normalised text,
singular or plural (`inflect`), British or American spelling, a number as digits or as words (hyphenated
or spaced compounds, "one hundred and twenty-five"), an ordinal. The exceptions are the plan's
candidate inside the condition of a conditional instruction whose candidate *is* the answer ("If it is
purple, repaint it red …"), the release's own style (`data_gen/system2.py`); and a word the embedded
question itself contains, inside the instruction's copy of the question (`in_question_span`).

Both sides are reduced to one token stream before matching: lowercase, accents stripped, hyphens split,
runs of number words folded into one number token (`n:21`, ordinals `o:21`), clause boundaries kept as
`|` tokens so a match can tell whether it sits in a condition clause ("if …", "when …", "whether …").
"one" is not a number in "one of", "one another", "the red one"; "a" and "an" never are.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

from num2words import num2words

BOUNDARY = "|"
_ARTICLES = frozenset({"a", "an", "the"})
#: British → American; matching tries both, normalise_answer writes the American form
SPELLING_VARIANTS: dict[str, str] = {
    "grey": "gray",
    "greys": "grays",
    "colour": "color",
    "colours": "colors",
    "coloured": "colored",
    "metre": "meter",
    "metres": "meters",
    "centre": "center",
    "centres": "centers",
    "litre": "liter",
    "litres": "liters",
    "aluminium": "aluminum",
    "theatre": "theater",
    "jewellery": "jewelry",
    "tyre": "tire",
    "tyres": "tires",
    "aeroplane": "airplane",
    "aeroplanes": "airplanes",
    "doughnut": "donut",
    "doughnuts": "donuts",
    "favourite": "favorite",
    "harbour": "harbor",
    "neighbour": "neighbor",
    "moustache": "mustache",
    "pyjamas": "pajamas",
    "cheque": "check",
    "kerb": "curb",
    "plough": "plow",
    "programme": "program",
    "mould": "mold",
    "armour": "armor",
    "flavour": "flavor",
    "honour": "honor",
    "labour": "labor",
    "organise": "organize",
    "catalogue": "catalog",
}
_AMERICAN_TO_BRITISH = {v: k for k, v in SPELLING_VARIANTS.items()}

_UNITS = "zero one two three four five six seven eight nine".split()
_TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL_UNITS = "zeroth first second third fourth fifth sixth seventh eighth ninth".split()
_ORDINAL_TEENS = (
    "tenth eleventh twelfth thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth"
).split()
_ORDINAL_TENS = "twentieth thirtieth fortieth fiftieth sixtieth seventieth eightieth ninetieth".split()
#: word -> (kind, value, is_ordinal)
_NUMBER_WORDS: dict[str, tuple[str, int, bool]] = {}
for _i, _w in enumerate(_UNITS):
    _NUMBER_WORDS[_w] = ("unit", _i, False)
for _i, _w in enumerate(_ORDINAL_UNITS):
    _NUMBER_WORDS[_w] = ("unit", _i, True)
for _i, _w in enumerate(_TEENS):
    _NUMBER_WORDS[_w] = ("teen", 10 + _i, False)
for _i, _w in enumerate(_ORDINAL_TEENS):
    _NUMBER_WORDS[_w] = ("teen", 10 + _i, True)
for _i, _w in enumerate(_TENS):
    _NUMBER_WORDS[_w] = ("tens", 20 + 10 * _i, False)
for _i, _w in enumerate(_ORDINAL_TENS):
    _NUMBER_WORDS[_w] = ("tens", 20 + 10 * _i, True)
_NUMBER_WORDS.update(
    {
        "hundred": ("hundred", 100, False),
        "hundredth": ("hundred", 100, True),
        "thousand": ("scale", 1000, False),
        "thousandth": ("scale", 1000, True),
        "million": ("scale", 1_000_000, False),
        "millionth": ("scale", 1_000_000, True),
    }
)
#: words before "one" that make it a pronoun ("the red one", "each one"), not a number
_ONE_PRONOUN_BEFORE = frozenset(
    {"the", "that", "this", "each", "every", "which", "any", "no", "other", "another", "some", "last", "only"}
)
_ONE_PRONOUN_AFTER = frozenset({"of", "another", "by"})
_CONDITION_WORDS = frozenset({"if", "when", "whether", "unless", "case", "provided", "should"})

_TOKEN = re.compile(r"\d+(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:st|nd|rd|th)?|[a-z]+(?:'[a-z]+)?|[.;:!?,()\"]")
_ORDINAL_DIGITS = re.compile(r"(\d+)(st|nd|rd|th)")



@lru_cache(maxsize=1)
def _inflect():
    """inflect's engine, made on first use: importing inflect instruments its functions with typeguard, which
    costs about a second of CPU (several on a busy machine) in every CLI process and Ray worker that never
    checks a leak. Its type checks are switched off while it imports: typeguard re-parses and recompiles
    inflect's module once per decorated function (about 2 s of CPU in every process that checks a leak, the
    CLI and each Ray worker); without them the same calls give the same words."""
    import typeguard

    instrument = typeguard.typechecked
    typeguard.typechecked = lambda target=None, **_: target if target is not None else (lambda f: f)
    try:
        import inflect
    finally:
        typeguard.typechecked = instrument
    return inflect.engine()


def _fold(text: str) -> str:
    if text.isascii():  # NFKD leaves ASCII as it is and it has no combining marks or curly quotes
        return text.lower()
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    return text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')


def _raw_tokens(text: str) -> list[str]:
    return list(_raw_token_tuple(text))


#: the token streams are pure functions of the text, asked for again and again of the same few texts (a record's
#: instruction, its answers and candidates, once per check): kept, as tuples no caller can change
_TOKEN_CACHE = 4096


@lru_cache(maxsize=_TOKEN_CACHE)
def _raw_token_tuple(text: str) -> tuple[str, ...]:
    out: list[str] = []
    for token in _TOKEN.findall(_fold(text)):
        if token in '.;:!?,()"':
            if out and out[-1] != BOUNDARY:
                out.append(BOUNDARY)
            continue
        out.append(token)
    return tuple(out)


def _number_token(value: float, ordinal: bool) -> str:
    shown = str(int(value)) if float(value).is_integer() else repr(float(value))
    return f"{'o' if ordinal else 'n'}:{shown}"


def _parse_number_run(words: list[str], start: int) -> tuple[int, bool, int] | None:
    """Fold the number words from `start` into (value, is_ordinal, next index); None if none starts here."""
    total = current = 0
    last: str | None = None
    i = start
    ordinal = False
    while i < len(words):
        word = words[i]
        if word == "and" and last in ("hundred", "scale") and i + 1 < len(words):
            nxt = _NUMBER_WORDS.get(words[i + 1])
            if nxt and nxt[0] in ("unit", "teen", "tens") and nxt[1] > 0:
                i += 1
                continue
            break
        entry = _NUMBER_WORDS.get(word)
        if entry is None:
            break
        kind, value, is_ordinal = entry
        if kind == "unit":
            ok = last in (None, "tens", "hundred", "scale") and not (value == 0 and last is not None)
            if ok:
                current += value
        elif kind in ("teen", "tens"):
            ok = last in (None, "hundred", "scale")
            if ok:
                current += value
        elif kind == "hundred":
            ok = last in ("unit", "teen", "tens") and 0 < current < 100
            if ok:
                current *= 100
        else:  # thousand, million
            ok = last is not None and last != "scale" and (current > 0)
            if ok:
                total += current * value
                current = 0
        if not ok:
            break
        last = kind
        i += 1
        if is_ordinal:
            ordinal = True
            break
    if last is None:
        return None
    return total + current, ordinal, i


def canonical_tokens(text: str) -> list[str]:
    """The token stream both sides of the leak check are matched in (see the module docstring)."""
    return list(_canonical_tuple(text))


@lru_cache(maxsize=_TOKEN_CACHE)
def _canonical_tuple(text: str) -> tuple[str, ...]:
    words = _raw_token_tuple(text)
    out: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word[0].isdigit():
            match = _ORDINAL_DIGITS.fullmatch(word)
            if match:
                out.append(_number_token(int(match.group(1)), True))
            else:
                out.append(_number_token(float(word.replace(",", "")), False))
            i += 1
            continue
        if word in _NUMBER_WORDS:
            parsed = _parse_number_run(words, i)
            if parsed is not None:
                value, ordinal, nxt = parsed
                single_one = nxt == i + 1 and word == "one"
                before = words[i - 1] if i > 0 else ""
                two_before = words[i - 2] if i > 1 else ""
                after = words[i + 1] if i + 1 < len(words) else ""
                pronoun = (
                    before in _ONE_PRONOUN_BEFORE
                    or two_before in _ONE_PRONOUN_BEFORE | _ARTICLES  # "the red one", "a big one"
                    or after in _ONE_PRONOUN_AFTER
                )
                if single_one and pronoun:
                    out.append(word)  # "one of the cubes", "the red one": a pronoun, not a count
                    i += 1
                    continue
                out.append(_number_token(value, ordinal))
                i = nxt
                continue
        out.append(SPELLING_VARIANTS.get(word, word))
        i += 1
    return tuple(out)


def normalise_text(text: str) -> str:
    """Lowercase, strip accents and punctuation, collapse whitespace (no other rewriting)."""
    return " ".join(t for t in _raw_token_tuple(text) if t != BOUNDARY)


@lru_cache(maxsize=_TOKEN_CACHE)
def normalise_answer(answer: str) -> str:
    """The VQA-style reference form of an answer, the one used everywhere in the package: lowercase, no
    accents, punctuation or leading article, American spelling, numbers as digits (ordinals as "21st"),
    "12.0" as "12"."""
    tokens = [t for t in canonical_tokens(answer) if t != BOUNDARY]
    out: list[str] = []
    for index, token in enumerate(tokens):
        if token in _ARTICLES and not out and index + 1 < len(tokens):  # "a" alone is an option letter
            continue
        if token[:2] in ("n:", "o:"):
            number = token[2:]
            out.append(number if token[0] == "n" else _inflect().ordinal(number))
        else:
            out.append(token)
    return " ".join(out)


def _word_variants(word: str, last: bool) -> set[str]:
    variants = {word, SPELLING_VARIANTS.get(word, word), _AMERICAN_TO_BRITISH.get(word, word)}
    if last and word.isalpha() and len(word) > 1:
        for form in list(variants):
            plural = _inflect().plural_noun(form)
            if plural:
                variants.add(plural)
            singular = _inflect().singular_noun(form)
            if singular:
                variants.add(singular)
    return {SPELLING_VARIANTS.get(v, v) for v in variants}


@lru_cache(maxsize=8192)
def answer_forms(answer: str) -> frozenset[tuple[str, ...]]:
    """Every canonical token sequence whose presence in an instruction states `answer`.

    A number also counts as its ordinal from 3 on ("third", "21st"; "first" and "second" are everyday
    words); an ordinal answer also counts as its number. One-letter non-numeric answers have no forms:
    they would match everywhere and reveal nothing.
    """
    tokens = [t for t in canonical_tokens(answer) if t != BOUNDARY]
    while tokens and tokens[0] in _ARTICLES:
        tokens = tokens[1:]
    if not tokens:
        return frozenset()
    if len(tokens) == 1 and tokens[0][:2] in ("n:", "o:"):
        number = tokens[0][2:]
        forms = {(tokens[0],)}
        if tokens[0][0] == "o":
            forms.add((f"n:{number}",))
        elif number.isdigit() and int(number) >= 3:
            forms.add((f"o:{number}",))
        return frozenset(forms)
    if len(tokens) == 1 and len(tokens[0]) < 2:
        return frozenset()
    sequences: list[list[str]] = [[]]
    for index, token in enumerate(tokens):
        variants = (
            _word_variants(token, index == len(tokens) - 1) if token[:2] not in ("n:", "o:") else {token}
        )
        sequences = [seq + [v] for seq in sequences for v in sorted(variants)]
    return frozenset(tuple(seq) for seq in sequences)


def _occurrences(tokens: list[str], form: tuple[str, ...]) -> Iterable[int]:
    n = len(form)
    for i in range(len(tokens) - n + 1):
        if tuple(tokens[i : i + n]) == form:
            yield i


def in_condition(tokens: list[str], index: int) -> bool:
    """Does token `index` sit in a condition clause: an "if / when / whether / unless …" earlier in the
    same clause (no comma, semicolon or full stop between)?"""
    for j in range(index - 1, -1, -1):
        if tokens[j] == BOUNDARY or tokens[j] == "then":
            return False
        if tokens[j] in _CONDITION_WORDS:
            return True
    return False


#: words too common to show that an instruction quotes the question around an answer form
_FILLER = frozenset({*_ARTICLES, "of", "to", "in", "on", "is", "are", "it", "and", "or", "that", "this", BOUNDARY})
#: at least this many neighbouring tokens (one of them not filler) shared with the question around the form
QUESTION_CONTEXT_TOKENS = 3


def in_question_span(tokens: list[str], index: int, length: int, question_tokens: list[str]) -> bool:
    """Does the form at `tokens[index:index + length]` sit inside the instruction's copy of the question?

    It does when the question holds the same form with the same neighbours: extending the match left and
    right of the form, token by token, while the instruction and the question agree, covers at least
    QUESTION_CONTEXT_TOKENS neighbours, one of them a content word ("left of the red circle" quoted or
    reworded around it). The answer said anywhere else ("if it is red", "paint it red") has no such
    neighbourhood in the question."""
    form = tokens[index : index + length]
    for start in _occurrences(question_tokens, tuple(form)):
        before = 0
        while (
            index - before - 1 >= 0
            and start - before - 1 >= 0
            and tokens[index - before - 1] == question_tokens[start - before - 1]
            and tokens[index - before - 1] != BOUNDARY
        ):
            before += 1
        after = 0
        while (
            index + length + after < len(tokens)
            and start + length + after < len(question_tokens)
            and tokens[index + length + after] == question_tokens[start + length + after]
            and tokens[index + length + after] != BOUNDARY
        ):
            after += 1
        shared = tokens[index - before : index] + tokens[index + length : index + length + after]
        if len(shared) >= QUESTION_CONTEXT_TOKENS and any(t not in _FILLER for t in shared):
            return True
    return False


def find_answer(
    instruction: str,
    *answers: str | None,
    allow_in_condition: bool = False,
    question: str | None = None,
) -> str | None:
    """The first answer form found in `instruction` (as the instruction spells it), else None.

    With `allow_in_condition` (the plan's candidate is the answer), an occurrence inside a condition
    clause is allowed; anywhere else it is still a leak. With `question` (the embedded question), a form
    that the question itself contains is allowed inside the instruction's copy of the question, and only
    there (`in_question_span`): "the square left of the red circle" with the answer red.
    """
    tokens = canonical_tokens(instruction)
    raw = _raw_tokens(instruction)
    question_tokens = canonical_tokens(question) if question else []
    for answer in answers:
        if not answer:
            continue
        for form in sorted(answer_forms(answer), key=lambda f: (-len(f), f)):
            for index in _occurrences(tokens, form):
                if allow_in_condition and in_condition(tokens, index):
                    continue
                if question_tokens and in_question_span(tokens, index, len(form), question_tokens):
                    continue
                return _shown(form, raw)
    return None


def _shown(form: tuple[str, ...], raw: list[str]) -> str:
    """A readable form for reject details: number tokens as digits."""
    return " ".join(t[2:] if t[:2] in ("n:", "o:") else t for t in form)


#: a quoted question ("Does the picture show this change: …?", curly quotes too, or single quotes that close
#: right after its "?"): its quote marks would end the clause around it ('if the answer to "…" is red')
QUOTED_QUESTION = re.compile(
    r'"[^"]*\?\s*"|\u201c[^\u201d]*\?\s*\u201d|(?<!\w)[\'\u2018][^\'\u2018\u2019]*\?\s*[\'\u2019](?!\w)'
)
#: the quote marks left where a verbatim copy of the question was taken out
_EMPTY_QUOTES = re.compile(r'"\s*"|\u201c\s*\u201d')


def unquote_questions(text: str) -> str:
    """`text` with each quoted question read as "the question", so the clause around it stays one clause."""
    return QUOTED_QUESTION.sub("the question", text)


def leaks_answer(
    instruction: str, *answers: str | None, candidate_is_answer: bool = False, question: str | None = None
) -> str | None:
    """The leak check of the rewrite stage: the answer form that gives the answer away, else None. Pass the
    embedded `question` so that its own words are not leaks inside its copy in the instruction (the quotes
    left where that copy was taken out read as "the question": 'if the answer to "…" is red' is a condition)."""
    instruction = _EMPTY_QUOTES.sub("the question", instruction)
    return find_answer(instruction, *answers, allow_in_condition=candidate_is_answer, question=question)


def mentions_answer(text: str, answer: str) -> bool:
    """True when `text` states `answer` anywhere, in any form (no condition exception)."""
    return find_answer(text, answer) is not None


def candidate_in_condition(instruction: str, candidate: str) -> bool:
    """Does the candidate appear (in any form) inside a condition clause of the instruction? (A quoted question
    is read as "the question": its words are not the condition's, its quote marks do not end the clause.)"""
    tokens = canonical_tokens(unquote_questions(instruction))
    return any(
        in_condition(tokens, index)
        for form in answer_forms(candidate) or {tuple(canonical_tokens(candidate))}
        for index in _occurrences(tokens, form)
    )


def same_answer(first: str, second: str) -> bool:
    """Do two answers mean the same under the normaliser (and its plural / spelling forms)?"""
    a, b = normalise_answer(first), normalise_answer(second)
    if a == b:
        return True
    forms_a = answer_forms(a)
    return bool(forms_a) and any(tuple(canonical_tokens(b)) == f for f in forms_a)


def number_words(n: int) -> str:
    """`n` in words, as num2words writes it ("twenty-one", "one hundred and five")."""
    return num2words(n)
