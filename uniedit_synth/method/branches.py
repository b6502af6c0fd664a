"""A conditional instruction's branches read from its own text: which clauses run when the condition holds and
which run otherwise, so the rewriter's `then_edit` / `else_edit` can be checked against them.

Choice (issue 24): the rewriter keeps its reply `{instruction, then_edit, else_edit, candidate}` and the code
parses the instruction, rather than assembling it from parts: a rewriter is free to word the logic as it
likes ("if … otherwise", "unless", "if not", "when … isn't", "in every other case", "… in which case",
a nested "if" inside a branch), and what reaches the editor is checked as written.

The parser is a small clause grammar, not a model:

1. The instruction (its closing sentence removed) is cut into clauses at punctuation and before connectives
   (if, when, unless, otherwise, or else, in every other case …); contractions are spelled out.
2. The main condition is the first condition clause that names the plan's candidate (in any form of
   answers.answer_forms). Its polarity is + unless it says "unless", or negates ("is not", "isn't",
   "other than", "anything but", "different from").
3. Clauses after it run with that polarity (or, when the condition follows its clause — "Repaint it red if
   it is purple, or else …" — the clause before it does), until a switch: an else marker ("otherwise", "or
   else", "if not", "in every other case", "if it is any other colour"), a back-reference ("if so",
   "if it is", "in which case": +, relative to the main condition) or a second condition on the candidate
   with its own polarity. A condition without the candidate inside a branch opens a nested condition, which
   keeps its branch's polarity and takes the next else marker as its own.
   A quoted question ("Does the picture show this change: add a mug?", as a chain's later turn asks) is read
   as "the question", not as clauses: the edit it quotes is not a branch, and the condition around it
   ('if the answer to "…" is yes') stays one clause. The candidate's own words do not negate its condition
   (a yes/no candidate "no": "if the answer is no" holds when the answer is no).
4. `then_edit` must fall in the + clauses and `else_edit` in the − clauses: the words that tell the two
   edits apart (edit_meaning.content_terms: lemmas, synonyms folded) are counted in each side; a swap scores
   higher crossed than straight.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .answers import answer_forms, canonical_tokens, unquote_questions
from .edit_meaning import _BRITISH, ACTION_VERBS, GENERIC_VERBS, content_terms, edit_meaning, verb_lemma

#: connectives that open a condition clause (multi-word ones as tuples)
CONDITION_OPENERS: tuple[tuple[str, ...], ...] = (
    ("only", "if"), ("as", "long", "as"), ("in", "case"), ("provided", "that"), ("provided",), ("if",),
    ("when",), ("whenever",), ("unless",), ("should",), ("assuming",), ("supposing",), ("whether",),
)
#: phrases that switch to the other branch
ELSE_MARKERS: tuple[tuple[str, ...], ...] = (
    ("in", "every", "other", "case"), ("in", "all", "other", "cases"), ("in", "any", "other", "case"),
    ("in", "other", "cases"), ("in", "the", "other", "case"), ("in", "the", "opposite", "case"),
    ("if", "that", "is", "not", "the", "case"), ("if", "this", "is", "not", "the", "case"),
    ("if", "it", "is", "not", "the", "case"), ("if", "not"), ("or", "else"), ("otherwise",), ("else",),
    ("failing", "that"), ("if", "no"), ("should", "it", "not"), ("and", "if", "not"), ("but", "if", "not"),
    ("alternatively",), ("conversely",), ("if", "instead"), ("instead",),
)
#: a prepositional opener over "any other value" is the other branch too ("for any other colour, …")
_OTHER_VALUE_OPENERS = frozenset({"for", "with", "in", "on", "at", "under", "given"})
_OTHER_VALUE_PAIRS = frozenset({("any", "other"), ("every", "other"), ("all", "other"), ("anything", "else"),
                                ("any", "different"), ("some", "other"), ("something", "else")})
#: phrases that refer back to the main condition holding
BACK_REFERENCES: tuple[tuple[str, ...], ...] = (
    ("in", "which", "case"), ("if", "so"), ("if", "yes"), ("if", "that", "is", "the", "case"),
    ("if", "this", "is", "the", "case"), ("if", "it", "is", "the", "case"), ("if", "true"),
)
#: words in a condition without the candidate that make it "any other value": the other branch
OTHER_VALUE_WORDS = frozenset({"other", "else", "different", "another", "anything", "otherwise"})
NEGATION_WORDS = frozenset({"not", "no", "never", "neither", "nor"})
NEGATION_PHRASES: tuple[tuple[str, ...], ...] = (
    ("other", "than"), ("anything", "but"), ("different", "from"), ("anything", "except"), ("except",),
    ("apart", "from"), ("rather", "than"),
)
_SPLIT = re.compile(r"[,;:.!?()\[\]\u2014\u2013]|\s-\s")
_SENTENCE_END = re.compile(r"[;.!?]")


@dataclass
class Clause:
    words: list[str]
    kind: str = "action"  # action | condition | else | backref
    polarity: int = 0  # for conditions: +1 / -1 relative to the main condition; for actions: the branch
    candidate: bool = False
    sentence: int = 0
    main: bool = False
    lead: tuple[str, ...] = ()  # the connective words stripped before it ("but", "and", "then")


@dataclass
class Branches:
    """The instruction's clauses that run when the condition holds (`then_text`) and otherwise (`else_text`)."""

    then_text: str = ""
    else_text: str = ""
    found_condition: bool = False
    clauses: list[Clause] = field(default_factory=list)


def _words(text: str) -> list[str]:
    text = text.lower().replace("\u2019", "'").replace("can't", "can not").replace("won't", "will not")
    text = text.replace("n't", " not").replace("'s", " is").replace("'re", " are")
    return [_BRITISH.get(w, w) for w in re.findall(r"[a-z]+|\d+(?:\.\d+)?", text.replace("-", " "))]


#: id(phrases) -> (phrases, their phrases by first word, in their order): `_starts` runs for every word of
#: every rewrite reply, against every phrase list, so it only compares the phrases that begin with the word
_BY_FIRST: dict[int, tuple[tuple[tuple[str, ...], ...], dict[str, list[tuple[str, ...]]]]] = {}


def _starts(words: list[str], phrases: tuple[tuple[str, ...], ...]) -> int:
    """Length of the first phrase of `phrases` that `words` starts with (0: none)."""
    known = _BY_FIRST.get(id(phrases))
    if known is None or known[0] is not phrases:
        if not isinstance(phrases, tuple) or not all(phrases):  # an empty phrase matches anything: scan in order
            return next((len(p) for p in phrases if tuple(words[: len(p)]) == p), 0)
        index: dict[str, list[tuple[str, ...]]] = {}
        for phrase in phrases:
            index.setdefault(phrase[0], []).append(phrase)
        known = _BY_FIRST[id(phrases)] = (phrases, index)
    if not words:
        return 0
    for phrase in known[1].get(words[0], ()):
        if tuple(words[: len(phrase)]) == phrase:
            return len(phrase)
    return 0


def _pieces(instruction: str) -> list[tuple[list[str], int]]:
    """(words, sentence index) per punctuation-delimited piece."""
    out = []
    sentence = 0
    position = 0
    for match in _SPLIT.finditer(instruction + "."):
        chunk = instruction[position : match.start()]
        position = match.end()
        words = _words(chunk)
        if words:
            out.append((words, sentence))
        if _SENTENCE_END.match(match.group()):
            sentence += 1
    return out


_LEADS = frozenset({"and", "but", "then", "or", "so"})
#: the words of an elliptical condition that refers back to the main one ("if it is", "if they are not")
_BACKREF_WORDS = frozenset({"it", "is", "are", "does", "do", "they", "so", "not", "that", "this", "the",
                            "case", "true", "was", "were", "indeed", "did", "be"})
_ELSE_PRONOUNS = frozenset({"anything", "something", "nothing", "everything", "what", "someone", "somewhere"})


def _split_connectives(words: list[str]) -> list[list[str]]:
    """Cut a piece before each connective that opens a condition, an else or a back-reference."""
    parts: list[list[str]] = [[]]
    i = 0
    while i < len(words):
        rest = words[i:]
        opener = (
            _starts(rest, ELSE_MARKERS) or _starts(rest, BACK_REFERENCES) or _starts(rest, CONDITION_OPENERS)
        )
        lead = rest[0] in ("and", "but", "then", "or") and (
            _starts(rest[1:], CONDITION_OPENERS) or _starts(rest[1:], ELSE_MARKERS)
        )
        only_leads = all(w in _LEADS for w in parts[-1])
        if rest[0] == "else" and i > 0 and words[i - 1] in _ELSE_PRONOUNS:
            opener = lead = 0  # "anything else", "what else": not the other branch's marker
        if (opener or lead) and parts[-1] and not only_leads and not (rest[0] == "should" and i > 0):
            parts.append([])
        parts[-1].append(words[i])
        i += 1
    return [p for p in parts if p]


def _has_candidate(words: list[str], candidate: str) -> bool:
    tokens = canonical_tokens(" ".join(words))
    forms = answer_forms(candidate) or {tuple(canonical_tokens(candidate))}
    return any(
        tuple(tokens[i : i + len(form)]) == form for form in forms for i in range(len(tokens) - len(form) + 1)
    )


def _without_candidate(words: list[str], candidate: str) -> list[str]:
    """`words` less the candidate's own words (its last occurrence), so a candidate "no" is not a negation."""
    own = _words(candidate)
    for i in range(len(words) - len(own), -1, -1):
        if own and words[i : i + len(own)] == own:
            return words[:i] + words[i + len(own) :]
    return words


def _negative(words: list[str]) -> bool:
    if words and words[0] == "unless":
        return not any(w in NEGATION_WORDS for w in words[1:])
    flips = sum(w in NEGATION_WORDS for w in words)
    flips += sum(1 for i in range(len(words)) if _starts(words[i:], NEGATION_PHRASES))
    return flips % 2 == 1


def _cut_condition(words: list[str], candidate: str) -> tuple[list[str], list[str]]:
    """A condition clause that runs on into its action without a comma ("if it is red paint it blue"): cut
    at the first action verb after the candidate."""
    for i in range(1, len(words)):
        lemma = verb_lemma(words[i])
        starts_action = lemma in ACTION_VERBS or lemma in GENERIC_VERBS or words[i] == "then"
        if starts_action and words[i - 1] not in ("be", "is", "are", "to") and _has_candidate(words[:i], candidate):
            return words[:i], words[i + 1 :] if words[i] == "then" else words[i:]
    return words, []


def classify(instruction: str, candidate: str) -> list[Clause]:
    clauses: list[Clause] = []
    for words, sentence in _pieces(instruction):
        for part in _split_connectives(words):
            head = part
            while len(head) > 1 and head[0] in _LEADS and head[:2] != ["or", "else"]:
                head = head[1:]
            lead = tuple(part[: len(part) - len(head)])
            if head[0] in _OTHER_VALUE_OPENERS and any(pair in _OTHER_VALUE_PAIRS for pair in zip(head, head[1:], strict=False)):
                clauses.append(Clause(head, "else", -1, sentence=sentence, lead=lead))
                continue
            if _starts(head, ELSE_MARKERS):
                n = _starts(head, ELSE_MARKERS)
                clauses.append(Clause(head[:n], "else", -1, sentence=sentence))
                if head[n:]:
                    clauses.append(Clause(head[n:], sentence=sentence))
                continue
            if _starts(head, BACK_REFERENCES):
                n = _starts(head, BACK_REFERENCES)
                clauses.append(Clause(head[:n], "backref", 1, sentence=sentence))
                if head[n:]:
                    clauses.append(Clause(head[n:], sentence=sentence))
                continue
            if _starts(head, CONDITION_OPENERS):
                condition, action = _cut_condition(head, candidate)
                has = _has_candidate(condition, candidate)
                polarity = -1 if _negative(_without_candidate(condition, candidate) if has else condition) else 1
                if not has and any(w in OTHER_VALUE_WORDS for w in condition):
                    polarity = -1  # "if the answer is anything else"
                clause = Clause(condition, "condition", polarity, candidate=has, sentence=sentence, lead=lead)
                if not has and condition[0] in ("if", "when") and set(condition[1:]) <= _BACKREF_WORDS:
                    clause.kind = "backref"  # "if it is", "if they are", "if it does not", "when it is"
                clauses.append(clause)
                if action:
                    clauses.append(Clause(action, sentence=sentence))
                continue
            clauses.append(Clause(head, sentence=sentence))
    return clauses


def read_branches(instruction: str, candidate: str, closing: str | None = None) -> Branches:
    """The instruction's then- and else-clauses (see the module docstring)."""
    if closing:
        instruction = instruction.replace(closing, " ")
    clauses = classify(unquote_questions(instruction), candidate)
    main = next((i for i, c in enumerate(clauses) if c.kind == "condition" and c.candidate), None)
    out = Branches(clauses=clauses)
    if main is None:
        return out
    out.found_condition = True
    clauses[main].main = True
    sign = clauses[main].polarity
    nxt = clauses[main + 1] if main + 1 < len(clauses) else None
    follows = nxt is not None and nxt.kind == "action" and nxt.sentence == clauses[main].sentence
    before = clauses[main - 1] if main > 0 else None
    if not follows and before is not None and before.kind == "action" and before.sentence == clauses[main].sentence:
        if edit_meaning(" ".join(before.words)).visible:
            before.polarity = sign  # "Repaint it red if it is purple, …"
    current = sign
    first_branch = True  # still in the branch the main condition opened
    nested = 0  # open nested conditions, each waiting for its own else marker
    for clause in clauses[main + 1 :]:
        if clause.kind == "else":
            if nested:
                nested -= 1
                continue
            current, first_branch = -current, False
        elif clause.kind == "backref":
            if not nested:
                current, first_branch = clause.polarity, False  # "if so" / "if it is" / "if not": absolute
        elif clause.kind == "condition":
            parallel = clause.polarity < 0 or _boundary_before(clauses, clause) or "but" in clause.lead
            if clause.candidate:
                current, first_branch, nested = clause.polarity, False, 0
            elif first_branch and not nested and parallel:
                current, first_branch = -current, False  # "if it is any other colour", a new sentence
            else:
                nested += 1
        else:
            clause.polarity = current
    out.then_text = " ".join(" ".join(c.words) for c in clauses if c.kind == "action" and c.polarity > 0)
    out.else_text = " ".join(" ".join(c.words) for c in clauses if c.kind == "action" and c.polarity < 0)
    return out


def _boundary_before(clauses: list[Clause], clause: Clause) -> bool:
    """Does the condition start a new sentence (a parallel condition, not one nested in the branch)?"""
    index = clauses.index(clause)
    return index > 0 and clauses[index - 1].sentence != clause.sentence


def branch_mismatch(
    instruction: str, then_edit: str, else_edit: str, candidate: str, closing: str | None = None
) -> str | None:
    """Why the reply's branch edits do not match the instruction's own clauses ('' never), else None."""
    branches = read_branches(instruction, candidate, closing)
    if not branches.found_condition:
        return f"no condition clause of the instruction tests the candidate {candidate!r}"
    if not branches.then_text or not branches.else_text:
        missing = "holds" if not branches.then_text else "does not hold"
        return f"the instruction has no clause that runs when the condition {missing}"
    then_terms, else_terms = content_terms(then_edit), content_terms(else_edit)
    plus, minus = content_terms(branches.then_text), content_terms(branches.else_text)
    only_then, only_else = then_terms - else_terms, else_terms - then_terms
    straight = len(only_then & plus) + len(only_else & minus)
    crossed = len(only_then & minus) + len(only_else & plus)
    if crossed > straight:
        return (
            "then_edit and else_edit are swapped against the instruction: the clause that runs when the "
            f"condition holds is {branches.then_text!r}, the other one {branches.else_text!r}"
        )
    if straight == 0 and (only_then or only_else):
        return (
            "then_edit and else_edit do not appear in the instruction's branch clauses "
            f"({branches.then_text!r} / {branches.else_text!r})"
        )
    return None
