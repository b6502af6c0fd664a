"""Text normalisation shared by stages: reference answers and the answer-leak check."""

from __future__ import annotations

import re
import unicodedata

_NUMBER_WORDS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
]  # fmt: skip
_WORD_TO_DIGIT = {w: str(i) for i, w in enumerate(_NUMBER_WORDS)}
_ARTICLES = {"a", "an", "the"}
_NON_WORD = re.compile(r"[^\w\s]+")


def normalise_text(text: str) -> str:
    """Lowercase, strip accents and punctuation, collapse whitespace."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    return " ".join(_NON_WORD.sub(" ", text).split())


def normalise_answer(answer: str) -> str:
    """The VQA-style reference form of an answer: lowercase, no articles or punctuation, digits for numbers."""
    words = [_WORD_TO_DIGIT.get(w, w) for w in normalise_text(answer).split() if w not in _ARTICLES]
    return " ".join(words)


def answer_forms(answer: str) -> set[str]:
    """Every surface form whose presence in an instruction gives the answer away."""
    base = normalise_answer(answer)
    forms = {base, normalise_text(answer)} - {""}
    if base.isdigit() and int(base) < len(_NUMBER_WORDS):
        forms.add(_NUMBER_WORDS[int(base)])
    return forms


def leaks_answer(instruction: str, *answers: str | None) -> str | None:
    """The answer form found in the instruction (word-boundary match after normalisation), else None.

    One-letter non-numeric answers are not checked: they would match everywhere and reveal nothing.
    """
    text = f" {normalise_text(instruction)} "
    digits = f" {' '.join(_WORD_TO_DIGIT.get(w, w) for w in text.split())} "
    for answer in answers:
        if not answer:
            continue
        for form in sorted(answer_forms(answer), key=lambda f: (-len(f), f)):
            if len(form) < 2 and not form.isdigit():
                continue
            if f" {form} " in text or f" {form} " in digits:
                return form
    return None
